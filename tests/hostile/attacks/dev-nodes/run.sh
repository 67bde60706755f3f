busybox ls /dev | busybox tr '\n' ' '; echo
for d in /dev/mem /dev/kmem /dev/port /dev/kmsg /dev/vda /dev/sda /dev/nvme0n1 /dev/kvm /dev/vsock \
         /dev/vhost-vsock /dev/fuse /dev/net/tun /dev/console /dev/tty /dev/shm /dev/mqueue /dev/loop0; do
  if [ -e "$d" ]; then echo "SEEN $d"; fi
done
echo checked
