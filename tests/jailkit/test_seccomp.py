"""The seccomp policies, run in the real nsjail with a probe of raw system calls."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from nixjail.jailkit import seccomp

# Each probe: a raw syscall(2) (number and arguments), printed as its errno name.
PROBE = r"""
import ctypes, errno, json, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
pair = (ctypes.c_int * 2)()
results = {}
for name, number, *args in json.loads(sys.argv[1]):
    args = [ctypes.addressof(pair) if a == "pair" else a for a in args]
    answer = libc.syscall(ctypes.c_long(number), *map(ctypes.c_long, args))
    results[name] = "ok" if answer >= 0 else errno.errorcode[ctypes.get_errno()]
print(json.dumps(results))
"""

# i386 getpid through `int 0x80`: the policies kill the thread (SIGSYS).
I386_PROBE = r"""
import ctypes, mmap
code = bytes([0xB8, 20, 0, 0, 0, 0xCD, 0x80, 0xC3])  # mov eax, 20; int 0x80; ret
page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
page.write(code)
call = ctypes.CFUNCTYPE(ctypes.c_long)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
print("i386 getpid answered", call(), flush=True)
"""

(SOCKET, SOCKETPAIR, GETPID, PTRACE, UNSHARE, CLONE, CLONE3, IO_URING_SETUP, IOCTL, SYNC,
 SETHOSTNAME, MODIFY_LDT, PERSONALITY, KEXEC_LOAD, BPF) = (
    41, 53, 39, 101, 272, 56, 435, 425, 16, 162, 170, 154, 135, 246, 321)
SOCK_STREAM, SOCK_DGRAM, SOCK_RAW, SOCK_SEQPACKET, SOCK_PACKET = 1, 2, 3, 5, 10
SOCK_CLOEXEC = 0o2000000
CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
X32 = 0x40000000
TIOCSTI, TIOCGWINSZ = 0x5412, 0x5413
READ_IMPLIES_EXEC = 0x0400000

# Both policies: name, syscall number, arguments, the errno (or "ok") expected.
FAMILY_CASES = [
    ("socket AF_UNIX", SOCKET, [1, SOCK_STREAM, 0], "ok"),
    ("socket AF_UNIX cloexec", SOCKET, [1, SOCK_STREAM | SOCK_CLOEXEC, 0], "ok"),
    ("socket AF_INET tcp", SOCKET, [2, SOCK_STREAM, 0], "ok"),
    ("socket AF_INET udp", SOCKET, [2, SOCK_DGRAM, 0], "ok"),
    ("socket AF_INET6 tcp", SOCKET, [10, SOCK_STREAM, 0], "ok"),
    ("socketpair AF_UNIX", SOCKETPAIR, [1, SOCK_STREAM, 0, "pair"], "ok"),
    ("socket AF_VSOCK", SOCKET, [40, SOCK_STREAM, 0], "EAFNOSUPPORT"),
    ("socket AF_PACKET", SOCKET, [17, SOCK_RAW, 0x0300], "EAFNOSUPPORT"),
    ("socket AF_NETLINK", SOCKET, [16, SOCK_RAW, 0], "EAFNOSUPPORT"),
    ("socket AF_ALG", SOCKET, [38, SOCK_SEQPACKET, 0], "EAFNOSUPPORT"),
    ("socket AF_BLUETOOTH", SOCKET, [31, SOCK_STREAM, 0], "EAFNOSUPPORT"),
    ("socket AF_XDP", SOCKET, [44, SOCK_RAW, 0], "EAFNOSUPPORT"),
    ("socket family 0", SOCKET, [0, SOCK_STREAM, 0], "EAFNOSUPPORT"),
    ("socket family -1", SOCKET, [-1, SOCK_STREAM, 0], "EAFNOSUPPORT"),
    # The kernel reads an int: AF_VSOCK (40) or AF_UNIX with bit 32 set.
    ("socket AF_VSOCK high bits", SOCKET, [(1 << 32) | 40, SOCK_STREAM, 0], "EAFNOSUPPORT"),
    ("socket AF_UNIX high bits", SOCKET, [(1 << 32) | 1, SOCK_STREAM, 0], "EAFNOSUPPORT"),
    ("socketpair AF_VSOCK", SOCKETPAIR, [40, SOCK_STREAM, 0, "pair"], "EAFNOSUPPORT"),
    ("socketpair AF_NETLINK", SOCKETPAIR, [16, SOCK_RAW, 0, "pair"], "EAFNOSUPPORT"),
    ("socket AF_INET raw", SOCKET, [2, SOCK_RAW, 1], "EPERM"),
    ("socket AF_INET raw cloexec", SOCKET, [2, SOCK_RAW | SOCK_CLOEXEC, 1], "EPERM"),
    ("socket AF_INET6 raw", SOCKET, [10, SOCK_RAW, 58], "EPERM"),
    ("socket AF_INET packet", SOCKET, [2, SOCK_PACKET, 0x0300], "EPERM"),
    ("ptrace", PTRACE, [0, 0, 0, 0], "EPERM"),
    ("io_uring_setup", IO_URING_SETUP, [1, 0], "EPERM"),
    ("kexec_load", KEXEC_LOAD, [0, 0, 0, 0], "EPERM"),
    ("bpf", BPF, [0, 0, 0], "EPERM"),
    ("getpid", GETPID, [], "ok"),
    # The x32 entry points: ENOSYS from the policy (and from a kernel without x32).
    ("x32 socket AF_VSOCK", X32 | SOCKET, [40, SOCK_STREAM, 0], "ENOSYS"),
    ("x32 ptrace", X32 | 521, [0, 0, 0, 0], "ENOSYS"),
    ("x32 getpid", X32 | GETPID, [], "ENOSYS"),
]

STAGE_CASES = [
    *FAMILY_CASES,
    ("unshare user", UNSHARE, [CLONE_NEWUSER], "EPERM"),
    ("clone newnet", CLONE, [CLONE_NEWNET | signal.SIGCHLD, 0, 0, 0, 0], "EPERM"),
    ("clone3", CLONE3, [0, 0], "ENOSYS"),
    ("ioctl TIOCSTI", IOCTL, [0, TIOCSTI, 0], "EPERM"),
    # Allowed, and the kernel answers for itself (stdin is no terminal).
    ("ioctl TIOCGWINSZ", IOCTL, [0, TIOCGWINSZ, 0], "ENOTTY"),
    # Not on the allow-list: ENOSYS, as on a kernel without the call.
    ("sync", SYNC, [], "ENOSYS"),
    ("sethostname", SETHOSTNAME, [0, 0], "ENOSYS"),
    ("modify_ldt", MODIFY_LDT, [0, 0, 0], "ENOSYS"),
    ("x32 sync", X32 | SYNC, [], "ENOSYS"),
    ("personality query", PERSONALITY, [0xFFFFFFFF], "ok"),
    ("personality READ_IMPLIES_EXEC", PERSONALITY, [READ_IMPLIES_EXEC], "ENOSYS"),
]

DAEMON_CASES = [
    *FAMILY_CASES,
    # What the Nix sandbox does: namespaces (a user namespace needs no privilege).
    ("unshare user", UNSHARE, [CLONE_NEWUSER], "ok"),
    ("sync", SYNC, [], "ok"),
]


def _jailed(nsjail: str, policy: str | None, *command: str) -> subprocess.CompletedProcess[str]:
    assert os.geteuid() == 0, "runs nsjail as root"
    argv = [nsjail, "--mode", "o", "--quiet", "--chroot", "/",
            "--user", "1000", "--group", "1000"]
    if policy is not None:
        argv += ["--seccomp_string", policy]
    argv += ["--", sys.executable, "-I", *command]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def _probe(nsjail: str, policy: str, cases: list, directory: Path) -> dict[str, str]:
    (directory / "probe.py").write_text(PROBE)
    calls = [[name, number, *args] for name, number, args, _ in cases]
    run = _jailed(nsjail, policy, str(directory / "probe.py"), json.dumps(calls))
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_the_stage_policy_is_an_allow_list() -> None:
    assert seccomp.STAGE_POLICY.rstrip().endswith(f"DEFAULT ERRNO({seccomp.ENOSYS})")
    assert not set(seccomp.STAGE_ALLOWED) & set(seccomp.STAGE_DENIED)
    for name in ("clone3", "sync", "mount", "ptrace", "keyctl", "bpf"):
        assert name not in seccomp.STAGE_ALLOWED


def test_the_stage_policy_answers_each_call(nsjail: str, open_dir: Path) -> None:
    answers = _probe(nsjail, seccomp.STAGE_POLICY, STAGE_CASES, open_dir)
    assert answers == {name: expected for name, _, _, expected in STAGE_CASES}


def test_the_daemon_policy_answers_each_call(nsjail: str, open_dir: Path) -> None:
    answers = _probe(nsjail, seccomp.DAEMON_POLICY, DAEMON_CASES, open_dir)
    assert answers == {name: expected for name, _, _, expected in DAEMON_CASES}


def test_the_daemon_policy_closes_every_x32_entry_point() -> None:
    block = seccomp.DAEMON_POLICY.split(f"ERRNO({seccomp.ENOSYS})")[1]
    for number in range(seccomp.X32_SYSCALLS):
        assert f"SYSCALL[{X32 + number:#x}]" in block
    assert seccomp.X32_SYSCALLS >= 1024


@pytest.mark.parametrize("policy", ["STAGE_POLICY", "DAEMON_POLICY"])
def test_the_i386_entry_point_kills(nsjail: str, open_dir: Path, policy: str) -> None:
    (open_dir / "i386.py").write_text(I386_PROBE)
    # Without a policy the same probe answers: the kernel has i386 emulation.
    free = _jailed(nsjail, None, str(open_dir / "i386.py"))
    assert free.returncode == 0 and free.stdout.startswith("i386 getpid answered "), free
    run = _jailed(nsjail, getattr(seccomp, policy), str(open_dir / "i386.py"))
    assert run.stdout == ""
    # nsjail reports a child killed by signal N as 128 + N.
    assert run.returncode == 128 + signal.SIGSYS, run


WORKLOAD = r"""
set -e
cd "$1"
printf '#include <stdio.h>\n#include <pthread.h>\nstatic void *f(void *a) { return a; }\n\
int main(void) { pthread_t t; pthread_create(&t, 0, f, 0); pthread_join(t, 0);\n\
puts("threads"); return 0; }\n' > main.c
gcc -O2 -pthread -o main main.c
./main
python3 -I -c 'import threading, subprocess, socket
t = threading.Thread(target=print, args=("python",)); t.start(); t.join()
subprocess.run(["true"], check=True)
socket.socket(socket.AF_INET).close(); socket.socket(socket.AF_UNIX).close()'
busybox sh -c 'echo busybox | busybox tr a-z A-Z'
"""


def test_toolchains_work_under_the_stage_policy(nsjail: str, open_dir: Path) -> None:
    argv = [nsjail, "--mode", "o", "--quiet", "--chroot", "/", "--user", "1000",
            "--group", "1000", "--bindmount", f"{open_dir}:{open_dir}",
            "--seccomp_string", seccomp.STAGE_POLICY,
            "--env", "PATH=/usr/bin:/bin", "--env", "TMPDIR=" + str(open_dir),
            "--", "/bin/bash", "-c", WORKLOAD, "workload", str(open_dir)]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["threads", "python", "BUSYBOX"]
