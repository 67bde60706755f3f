busybox setsid sh -c 'sleep 300' </dev/null >/dev/null 2>&1 &
busybox nohup busybox sleep 300 </dev/null >/dev/null 2>&1 &
echo started
