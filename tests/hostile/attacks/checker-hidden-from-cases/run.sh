a=ANS; a="${a}WER-"; e=EXPEC; e="${e}TED-"
busybox ls -a /nixjail
busybox grep -rs -e "$a" -e "$e" /nixjail /work /tmp /dev/shm /etc 2>/dev/null | busybox head -5
echo looked
