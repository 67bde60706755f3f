n=0; for f in * .hidden; do n=$((n+1)); done; echo $n
if [ -e PWNED ] || [ -e PWNED2 ]; then echo PWNED; fi
busybox cat ./-rf ./'$(touch PWNED)' ./'a
b' ./ünï d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d
echo
