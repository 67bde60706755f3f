busybox od -An -tx1 data.bin | busybox tr -s ' '
