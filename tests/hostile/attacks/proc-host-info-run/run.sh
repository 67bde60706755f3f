busybox cat /proc/cmdline 2>/dev/null
busybox cat /proc/sys/kernel/random/boot_id 2>/dev/null
busybox zcat /proc/config.gz 2>/dev/null | busybox head -n 3
busybox cat /proc/self/mountinfo 2>/dev/null
busybox cat /proc/1/mountinfo 2>/dev/null
echo checked
