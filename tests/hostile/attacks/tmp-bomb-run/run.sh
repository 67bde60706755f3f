i=0
while busybox head -c 1048576 /dev/zero > "/tmp/f$i" 2>/dev/null; do i=$((i+1)); done
echo "stopped after $i"
