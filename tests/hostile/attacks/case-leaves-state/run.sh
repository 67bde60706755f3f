if [ "$1" = leave ]; then
  echo left > /work/left.txt; echo left > /tmp/left.txt; echo left > /dev/shm/left.txt 2>/dev/null
  busybox nohup busybox sleep 60 >/dev/null 2>&1 &
  echo left
  exit 0
fi
seen=""
for f in /work/left.txt /tmp/left.txt /dev/shm/left.txt; do [ -e "$f" ] && seen="$seen $f"; done
for p in /proc/[0-9]*; do busybox cat "$p/comm" 2>/dev/null; done | busybox grep -q sleep && seen="$seen sleeper"
echo "seen:${seen:- nothing}"
