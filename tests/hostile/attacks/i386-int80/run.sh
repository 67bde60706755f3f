./abi-probe i386
echo "rc=$?"
