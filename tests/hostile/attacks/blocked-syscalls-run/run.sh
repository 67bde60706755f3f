./abi-probe syscalls
