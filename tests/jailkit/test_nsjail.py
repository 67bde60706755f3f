"""The kit's nsjail command line, run in the real nsjail: the common part only."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from nixjail.jailkit.nsjail import (
    PROC_MASKED,
    Bind,
    Identity,
    JailLimits,
    Symlink,
    Tmpfs,
    nsjail_argv,
    preexec,
    proc_masks,
)

SYSTEM = [Bind(d, d) for d in ("/usr", "/bin", "/lib", "/lib64") if os.path.exists(d)]
# Issue 9, item 8a: what the jail must not read of the host.
SECRETS = ("/proc/cmdline", "/proc/config.gz", "/proc/sys/kernel/random/boot_id",
           "/proc/kallsyms", "/proc/keys", "/proc/sched_debug", "/proc/timer_list")


def _argv(nsjail: str, mounts: list, command: list[str]) -> list[str]:
    return nsjail_argv(
        nsjail, identity=Identity(1000, 1000, 1000, 1000),
        limits=JailLimits(wall_time_s=10, cpu_time_s=2, memory_mib=64, processes=16),
        cwd="/", mounts=mounts, env={"PATH": "/usr/bin:/bin"}, command=command, log=2)


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60,
                          preexec_fn=preexec(1 << 20))


def test_the_common_part_mounts_no_content(nsjail: str) -> None:
    argv = _argv(nsjail, [], ["/bin/true"])
    mounted = [argv[i + 1] for i, arg in enumerate(argv) if arg.startswith(("--bindmount",
                                                                          "--mount"))]
    sources = {entry.split(":")[0] for entry in mounted} - {"none", "/dev/null"}
    assert sources <= {"/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"}, mounted
    assert "--chroot" not in argv


def test_the_callers_mounts_in_order(nsjail: str, open_dir: Path) -> None:
    (open_dir / "file").write_text("seen\n")
    mounts = [*SYSTEM, Bind(str(open_dir), "/data"), Tmpfs("/scratch", 1 << 20),
              Symlink("/data/file", "/link")]
    run = _run(_argv(nsjail, mounts, ["/bin/sh", "-c",
                                      "cat /link; touch /data/x || echo ro; touch /scratch/y &&"
                                      " echo rw; ls / | tr '\\n' ' '"]))
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[:3] == ["seen", "ro", "rw"], run.stdout
    assert set(lines[3].split()) == {"bin", "data", "dev", "lib", "lib64", "link", "proc",
                                     "scratch", "usr"}


def test_proc_hides_the_hosts_secrets(nsjail: str) -> None:
    reads = "; ".join(f'echo "{p} $(cat {p} 2>/dev/null | wc -c)"' for p in SECRETS)
    run = _run(_argv(nsjail, SYSTEM, ["/bin/sh", "-c", reads + "; echo $$; ls /proc/self/fd "
                                      ">/dev/null && echo fd; touch /proc/x 2>/dev/null || "
                                      "echo ro"]))
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert dict(line.split() for line in lines[:len(SECRETS)]) == dict.fromkeys(SECRETS, "0")
    # The jail's own /proc: its PID namespace, its descriptors, read-only.
    assert lines[len(SECRETS):] == ["1", "fd", "ro"]
    # Whatever of the list this kernel has and the jail could read is masked.
    for name in proc_masks():
        assert name in PROC_MASKED and f"/dev/null:/proc/{name}" in _argv(nsjail, [], ["x"])


def test_every_jail_process_is_the_first_oom_victim(nsjail: str) -> None:
    run = _run(_argv(nsjail, SYSTEM, ["/bin/sh", "-c", "cat /proc/self/oom_score_adj; "
                                      "sh -c 'cat /proc/$$/oom_score_adj'"]))
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["1000", "1000"]


def test_rlimits(nsjail: str) -> None:
    run = _run(_argv(nsjail, SYSTEM, ["/bin/bash", "-c", "ulimit -t; ulimit -f; ulimit -u"]))
    assert run.returncode == 0, run.stderr
    # CPU: the backstop a second past the 2 s limit; file size: 1 MiB (bash counts KiB).
    assert run.stdout.split() == ["3", "1024", "18"]
