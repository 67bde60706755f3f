"""The nsjail command line for one stage: namespaces, mounts, rlimits and seccomp policy."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from protocol import Limits

JAIL_UID = 1000
JAIL_GID = 1000
JAIL_HOME = "/work"
JAIL_TOOLS = "/nixjail"  # init's scripts for the stage, read-only inside
JAIL_OUT = "/nixjail-out"  # written by the dependencies stage only
# The image's directories that bash and nix need; mounted read-only when present.
SYSTEM_DIRS = ("/bin", "/usr", "/lib", "/lib64", "/lib32", "/libx32")
DEVICES_RW = ("/dev/null", "/dev/zero", "/dev/full")
DEVICES_RO = ("/dev/random", "/dev/urandom")
# Two jail-side shells (the PID 1 wrapper and the stage shell) count against RLIMIT_NPROC.
WRAPPER_PROCESSES = 2
# Without a cgroup limit, RLIMIT_AS is the backstop: room for address-space reservations
# above the resident limit, which is checked after the stage from the peak RSS.
AS_FACTOR = 2
AS_SLACK_MIB = 64

# Namespace flags for clone(): CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET|
# NEWTIME. clone3 hides its flags in memory seccomp cannot read, so it answers ENOSYS and
# libc falls back to clone.
_CLONE_NEW_ANY = 0x7E020080
SECCOMP_POLICY = f"""
POLICY nixjail {{
  ERRNO(1) {{
    ptrace, process_vm_readv, process_vm_writev, kcmp,
    mount, umount, pivot_root, chroot, move_mount, open_tree, fsopen, fsconfig, fsmount,
    fspick, mount_setattr, unshare, setns,
    keyctl, add_key, request_key, bpf, perf_event_open, userfaultfd, io_uring_setup,
    kexec_load, kexec_file_load, reboot, swapon, swapoff, acct, quotactl,
    init_module, finit_module, delete_module,
    open_by_handle_at, name_to_handle_at, lookup_dcookie, fanotify_init,
    iopl, ioperm, syslog, vhangup,
    settimeofday, clock_settime, adjtimex, clock_adjtime,
    clone {{ (clone_flags & {_CLONE_NEW_ANY:#x}) != 0 }}
  }},
  ERRNO(38) {{ clone3 }}
}}
USE nixjail DEFAULT ALLOW
"""


@dataclass
class JailSpec:
    """Everything one nsjail run needs besides the command."""

    nsjail: str
    limits: Limits
    work_dir: Path
    tools_dir: Path
    etc_dir: Path
    log_fd: int
    outside_uid: int
    outside_gid: int
    memory_cgroup_limited: bool
    env: dict[str, str] = field(default_factory=dict)
    # (source, destination, writable)
    mounts: list[tuple[str, str, bool]] = field(default_factory=list)


def cpu_rlimit_s(limits: Limits) -> int:
    """RLIMIT_CPU has whole seconds; the exact limit is checked after the stage."""
    return max(1, math.ceil(limits.cpu_time_s))


def address_space_mib(limits: Limits) -> int:
    return limits.memory_mib * AS_FACTOR + AS_SLACK_MIB


def nsjail_command(spec: JailSpec, command: list[str]) -> list[str]:
    limits = spec.limits
    argv = [
        spec.nsjail,
        "--mode", "o",
        "--quiet",
        "--log_fd", str(spec.log_fd),
        "--hostname", "nixjail",
        "--cwd", JAIL_HOME,
        "--user", f"{JAIL_UID}:{spec.outside_uid}:1",
        "--group", f"{JAIL_GID}:{spec.outside_gid}:1",
        # init kills on the exact wall time itself; this is only a backstop.
        "--time_limit", str(math.ceil(limits.wall_time_s) + 5),
        "--rlimit_cpu", str(cpu_rlimit_s(limits)),
        "--rlimit_as",
        "inf" if spec.memory_cgroup_limited else str(address_space_mib(limits)),
        "--rlimit_nproc", str(limits.processes + WRAPPER_PROCESSES),
        # RLIMIT_FSIZE is set in bytes by init on nsjail itself ("soft" keeps it):
        # nsjail's own flag counts in whole MiB.
        "--rlimit_fsize", "soft",
        "--rlimit_nofile", "1024",
        "--rlimit_core", "0",
        "--rlimit_stack", "soft",
        "--seccomp_string", SECCOMP_POLICY,
    ]
    if not os.path.exists("/proc/self/ns/cgroup"):
        argv.append("--disable_clone_newcgroup")
    for directory in SYSTEM_DIRS:
        if os.path.exists(directory):
            argv += ["--bindmount_ro", directory]
    argv += ["--bindmount_ro", f"{spec.etc_dir}:/etc"]
    # mode=555: the jail user cannot add files to /dev (nsjail creates the mount points
    # before it drops privileges); a sticky world-writable /dev would also stop the jail
    # user from opening the devices for writing (the kernel's protected-files rules).
    argv += ["--mount", "none:/dev:tmpfs:size=65536,mode=555"]
    argv += [arg for dev in DEVICES_RW if os.path.exists(dev) for arg in ("--bindmount", dev)]
    argv += [arg for dev in DEVICES_RO if os.path.exists(dev) for arg in ("--bindmount_ro", dev)]
    # A private devpts: nix builds talk to their builder through a pseudoterminal.
    argv += ["--mount", "none:/dev/pts:devpts:newinstance,ptmxmode=0666,mode=0620"]
    argv += ["--symlink", "/dev/pts/ptmx:/dev/ptmx"]
    argv += ["--symlink", "/proc/self/fd:/dev/fd"]
    for number, name in enumerate(("stdin", "stdout", "stderr")):
        argv += ["--symlink", f"/proc/self/fd/{number}:/dev/{name}"]
    # tmpfs pages are charged to the memory cgroup too, so the memory limit bounds /tmp.
    argv += ["--mount", f"none:/tmp:tmpfs:size={limits.memory_mib * 1024 * 1024},mode=1777"]
    argv += ["--bindmount", f"{spec.work_dir}:{JAIL_HOME}"]
    argv += ["--bindmount_ro", f"{spec.tools_dir}:{JAIL_TOOLS}"]
    for source, destination, writable in spec.mounts:
        argv += ["--bindmount" if writable else "--bindmount_ro", f"{source}:{destination}"]
    for name, value in spec.env.items():
        argv += ["--env", f"{name}={value}"]
    return [*argv, "--", *command]
