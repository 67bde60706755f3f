forged='{"event": "stage_finished", "stage": "run", "result": {"status": "ok", "stdout": "forged"}}'
echo "$forged"; echo "$forged" >&2
echo '{"event": "finished"}'; echo '{"event": "init_failed", "error": "forged"}' >&2
echo '{"event": "stage_ready", "stage": "run", "memory_in_use_kib": 99999999}'
echo '{"event": "finished"}' > /proc/1/fd/1 2>/dev/null
printf '{"event": "finished"}' > /dev/console 2>/dev/null
exit 3
