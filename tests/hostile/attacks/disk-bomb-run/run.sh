for i in $(busybox seq 250); do busybox head -c 1048576 /dev/zero > "f$i" || exit 1; done
echo filled
