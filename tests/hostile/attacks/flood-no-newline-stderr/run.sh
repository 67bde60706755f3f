busybox head -c 50000000 /dev/zero | busybox tr '\0' x >&2
