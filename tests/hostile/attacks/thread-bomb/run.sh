./abi-probe threads
