#!/bin/sh
# Rebuild the probe the attacks send as a file (a C compiler is needed only here).
set -eu
cd "$(dirname "$0")"
gcc -static -nostdlib -Os -s -fno-asynchronous-unwind-tables -fno-stack-protector -fno-builtin -ffreestanding \
  -Wl,--build-id=none -o abi-probe abi-probe.c
