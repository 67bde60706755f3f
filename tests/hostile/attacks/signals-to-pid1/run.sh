for s in KILL TERM INT HUP SEGV ABRT STOP; do kill -s $s 1 2>/dev/null; done
echo after
