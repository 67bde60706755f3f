kill -9 -1
for p in $(busybox seq 1 500); do [ "$p" = "$$" ] || kill -9 "$p" 2>/dev/null; done
echo survived
