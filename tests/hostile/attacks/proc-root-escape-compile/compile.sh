# Container init's own files and the image around the jail, through every
# process's root and cwd links, and by name anywhere in the jail.
for p in /proc/[0-9]*/root /proc/[0-9]*/cwd /proc/self/root /proc/1/root; do
  for t in var/lib/nixjail-init opt/nixjail/container_init/nixjail_init.py \
           ../../var/lib/nixjail-init; do
    if busybox ls "$p/$t" >/dev/null 2>&1; then echo "SEEN $p/$t"; fi
  done
done
busybox find / -path /proc -prune -o \( -name 'nixjail_init.py' -o -name 'nixjail-init-*' \) -print 2>/dev/null |
  busybox sed 's/^/SEEN /'
echo checked
