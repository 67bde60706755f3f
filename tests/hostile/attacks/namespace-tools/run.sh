for try in "unshare -r id" "unshare -m true" "unshare -n true" "mount -t tmpfs none /work" \
           "chroot / true" "nsenter -t 1 -m true" "mknod /work/null2 c 1 3"; do
  if busybox $try >/dev/null 2>&1; then echo "ALLOWED $try"; fi
done
echo checked
