ln -s / rootlink; ln -s /proc/1/root p1; ln -s ../../../../../../../var/lib/nixjail-init up
ln -s /proc/self/root/.. selfup
for l in rootlink/var/lib/nixjail-init p1/var/lib/nixjail-init up selfup/var/lib/nixjail-init \
         rootlink/opt/nixjail p1/opt/nixjail; do
  if busybox ls "$l" >/dev/null 2>&1; then echo "SEEN $l"; fi
done
echo checked
