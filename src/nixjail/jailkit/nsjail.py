"""The common part of every nixjail nsjail command line.

The kit adds what every jail has: namespaces (nsjail's defaults, with an empty
network namespace), the one-uid user and group maps, rlimits, the seccomp
policy, a minimal /dev, a /proc of the jail's own with the host's secrets
masked, and the hostname. What the jail sees besides (read-only and writable
binds, tmpfs, symlinks) is each caller's, passed in as `mounts`, in order.
"""

from __future__ import annotations

import math
import os
import resource
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from .seccomp import STAGE_POLICY

HOSTNAME = "nixjail"
# Two jail-side shells (nsjail's child and the stage's shell) count against RLIMIT_NPROC.
WRAPPER_PROCESSES = 2
# Without a cgroup memory limit, RLIMIT_AS is the backstop: room for address-space
# reservations above the resident limit.
AS_FACTOR = 2
AS_SLACK_MIB = 64
# nsjail's own wall-time kill is a backstop behind its supervisor's exact one.
WALL_BACKSTOP_S = 5
# RLIMIT_CPU (per process, soft = hard, so SIGKILL) is a backstop too, a second
# past the limit: the supervisor judges and kills by the whole run's CPU time,
# and a kill at the limit itself could not be told from the submission's own
# SIGKILL, since the kernel's rlimit clock is tick-sampled while the figure
# reported is exact (issue 9: a loaded machine read 0.85 s at a 1 s rlimit).
CPU_BACKSTOP_S = 1
OOM_SCORE_ADJ = 1000  # the jail is the first the kernel kills, its supervisor the last

DEVICES_RW = ("/dev/null", "/dev/zero", "/dev/full")
DEVICES_RO = ("/dev/random", "/dev/urandom")
# What the host gives away through /proc, covered with an empty file (binds of
# /dev/null) where the kernel has it: its command line and configuration, the
# boot id, kernel addresses, keys, scheduler and timer internals, interrupts.
PROC_MASKED = (
    "cmdline", "config.gz", "sys/kernel/random/boot_id", "sys/kernel/random/uuid",
    "kallsyms", "keys", "key-users", "sched_debug", "timer_list", "timer_stats",
    "latency_stats", "kcore", "kmsg", "modules", "iomem", "ioports", "interrupts",
    "vmallocinfo", "slabinfo", "buddyinfo", "pagetypeinfo", "zoneinfo", "softirqs",
    "mdstat", "partitions", "diskstats", "swaps", "devices", "misc",
)


@dataclass(frozen=True)
class Bind:
    source: str
    destination: str
    writable: bool = False


@dataclass(frozen=True)
class Tmpfs:
    destination: str
    size_bytes: int
    options: str = "mode=1777"


@dataclass(frozen=True)
class Symlink:
    target: str
    link: str


Mount = Bind | Tmpfs | Symlink


@dataclass(frozen=True)
class JailLimits:
    """The limits nsjail itself enforces (rlimits and its wall-time backstop)."""

    wall_time_s: float
    cpu_time_s: float
    memory_mib: int
    processes: int
    # None: a cgroup limits memory, RLIMIT_AS stays unlimited.
    address_space_limited: bool = True


@dataclass(frozen=True)
class Identity:
    """The jail's one user and group, and the ids outside they map to."""

    uid: int
    gid: int
    outside_uid: int
    outside_gid: int


def cpu_rlimit_s(cpu_time_s: float) -> int:
    """RLIMIT_CPU of a run: whole seconds, past the limit (see CPU_BACKSTOP_S)."""
    return math.ceil(cpu_time_s) + CPU_BACKSTOP_S


def address_space_mib(memory_mib: int) -> int:
    return memory_mib * AS_FACTOR + AS_SLACK_MIB


def _mount_args(mount: Mount) -> list[str]:
    if isinstance(mount, Bind):
        flag = "--bindmount" if mount.writable else "--bindmount_ro"
        return [flag, f"{mount.source}:{mount.destination}"]
    if isinstance(mount, Tmpfs):
        return ["--mount", f"none:{mount.destination}:tmpfs:size={mount.size_bytes},"
                           f"{mount.options}"]
    return ["--symlink", f"{mount.target}:{mount.link}"]


def proc_masks(proc: str = "/proc") -> list[str]:
    """The entries of PROC_MASKED that the jail user could read: those this kernel has
    (the jail's /proc is the same kernel's) and that are world-readable (the jail's ids
    are not the owner's, so only the world bits apply; nsjail cannot bind over the rest)."""
    found = []
    for name in PROC_MASKED:
        try:
            mode = os.stat(f"{proc}/{name}").st_mode
        except OSError:
            continue
        if mode & stat.S_IROTH:
            found.append(name)
    return found


def nsjail_argv(
    nsjail: str,
    *,
    identity: Identity,
    limits: JailLimits,
    cwd: str,
    mounts: Sequence[Mount],
    env: Mapping[str, str],
    command: Sequence[str],
    log: int | str,
    seccomp_policy: str = STAGE_POLICY,
) -> list[str]:
    """The whole nsjail argv: the common part, then the caller's mounts and environment.

    `log` is a file descriptor or a file name for nsjail's own messages.
    """
    argv = [
        nsjail, "--mode", "o", "--quiet",
        *(["--log_fd", str(log)] if isinstance(log, int) else ["--log", log]),
        "--hostname", HOSTNAME,
        "--cwd", cwd,
        "--user", f"{identity.uid}:{identity.outside_uid}:1",
        "--group", f"{identity.gid}:{identity.outside_gid}:1",
        "--time_limit", str(math.ceil(limits.wall_time_s) + WALL_BACKSTOP_S),
        "--rlimit_cpu", str(cpu_rlimit_s(limits.cpu_time_s)),
        "--rlimit_as",
        str(address_space_mib(limits.memory_mib)) if limits.address_space_limited else "inf",
        "--rlimit_nproc", str(limits.processes + WRAPPER_PROCESSES),
        # RLIMIT_FSIZE is set in bytes on nsjail itself (preexec); "soft" keeps it, where
        # nsjail's own flag would count whole MiB.
        "--rlimit_fsize", "soft",
        "--rlimit_nofile", "1024",
        "--rlimit_core", "0",
        "--rlimit_stack", "soft",
        "--seccomp_string", seccomp_policy,
        # /proc is mounted below, so the masks can go over it.
        "--disable_proc",
    ]
    if not os.path.exists("/proc/self/ns/cgroup"):
        argv.append("--disable_clone_newcgroup")
    # mode=555: the jail user cannot add files to /dev (nsjail creates the mount points
    # before it drops privileges); a sticky world-writable /dev would also stop the jail
    # user from opening the devices for writing (the kernel's protected-files rules).
    argv += ["--mount", "none:/dev:tmpfs:size=65536,mode=555"]
    argv += [arg for dev in DEVICES_RW if os.path.exists(dev) for arg in ("--bindmount", dev)]
    argv += [arg for dev in DEVICES_RO if os.path.exists(dev) for arg in ("--bindmount_ro", dev)]
    # A private devpts: nix builds talk to their builder through a pseudoterminal.
    argv += ["--mount", "none:/dev/pts:devpts:newinstance,ptmxmode=0666,mode=0620"]
    argv += ["--symlink", "/dev/pts/ptmx:/dev/ptmx", "--symlink", "/proc/self/fd:/dev/fd"]
    for number, name in enumerate(("stdin", "stdout", "stderr")):
        argv += ["--symlink", f"/proc/self/fd/{number}:/dev/{name}"]
    # The jail's own /proc (its PID namespace), read-only, with the host's secrets masked.
    argv += ["--mount", "none:/proc:proc:ro"]
    for name in proc_masks():
        argv += ["--bindmount_ro", f"/dev/null:/proc/{name}"]
    for mount in mounts:
        argv += _mount_args(mount)
    for name, value in env.items():
        argv += ["--env", f"{name}={value}"]
    return [*argv, "--", *command]


def preexec(file_size_bytes: int) -> Callable[[], None]:
    """What runs in nsjail's process before exec: RLIMIT_FSIZE in bytes, and an OOM
    score that makes the jail (nsjail and all it starts inherit it) the kernel's first
    victim; raising one's own score needs no privilege."""

    def before_exec() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_bytes, file_size_bytes))
        with open("/proc/self/oom_score_adj", "w") as score:
            score.write(str(OOM_SCORE_ADJ))

    return before_exec
