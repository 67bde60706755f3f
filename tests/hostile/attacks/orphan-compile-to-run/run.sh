a=$(cat beat); busybox sleep 1; b=$(cat beat)
if [ "$a" = "$b" ]; then echo still; else echo "ALIVE $a $b"; fi
