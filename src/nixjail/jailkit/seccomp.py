"""The seccomp policies of nixjail (kafel text, for nsjail's `--seccomp_string`).

STAGE_POLICY is the policy of every jail that runs a submission's code:
container init's stages (run, compile, dependencies) and the cache builder's
evaluation jail. Those jails run with Docker's own profile off, so it is the
only filter there is, and it is an allow-list: a call it does not name answers
ENOSYS, as on a kernel that lacks it, so libc's fallbacks (clone3 -> clone,
faccessat2 -> faccessat, close_range -> a loop ...) keep working while every
call added to a future kernel starts closed. Rules match in order, first wins:

1. `socket`/`socketpair` of any family but AF_UNIX, AF_INET, AF_INET6 (the
   whole 64-bit argument compared): EAFNOSUPPORT. AF_INET/AF_INET6 only reach
   the jail's own empty network namespace; AF_VSOCK (the hypervisor),
   AF_PACKET, AF_NETLINK, AF_ALG ... and any family added later are refused.
2. raw and packet sockets (SOCK_RAW, SOCK_PACKET): EPERM.
3. calls that widen what the jail sees or does (tracing, mounts, namespaces,
   keyrings, BPF, perf, io_uring, modules, clocks ...) and `clone` with a
   CLONE_NEW* flag: EPERM, a clear "not allowed" rather than "not there".
4. `ioctl(TIOCSTI)` (typing into a terminal): EPERM.
5. the allow-list (STAGE_ALLOWED), `personality` for the few personas libc and
   Nix ask for.
6. everything else, `clone3` (whose flags seccomp cannot read) and the x32
   entry points (numbers with bit 30 set) included: ENOSYS.
The i386 entry points (`int 0x80`) kill the thread (SIGSYS): kafel compiles
for x86-64 and kills on any other audit arch.

DAEMON_POLICY is the filter of the cache builder's per-job nix-daemon, and so
of every builder it forks (a filter is inherited and stays under the Nix
sandbox's own). nix-daemon and the Nix sandbox need namespaces, mounts,
pivot_root, chroot and keyrings, so its default is ALLOW, with rules 1 and 2
above, the kernel-wide calls no build needs (modules, kexec, reboot, swap,
clocks, BPF, perf, io_uring, tracing ...) refused with EPERM, and the x32
entry points with ENOSYS (the i386 ones kill, as above).
"""

AF_UNIX = 1
AF_INET = 2
AF_INET6 = 10
ALLOWED_FAMILIES = (AF_UNIX, AF_INET, AF_INET6)
EPERM = 1
ENOSYS = 38
EAFNOSUPPORT = 97
SOCK_TYPE_MASK = 0xF  # the type without SOCK_NONBLOCK / SOCK_CLOEXEC
SOCK_RAW = 3
SOCK_PACKET = 10
TIOCSTI = 0x5412
# CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET|NEWTIME.
CLONE_NEW_ANY = 0x7E020080
X32_SYSCALL_BIT = 0x40000000
# The x32 table has about 550 entries (kernel 6.x); 1024 leaves room.
X32_SYSCALLS = 1024
# personality(2) values allowed in a stage: query, PER_LINUX, PER_LINUX32,
# UNAME26 variants and ADDR_NO_RANDOMIZE (Nix builds ask for it).
PERSONAS = (0x0, 0x8, 0x20000, 0x20008, 0x40000, 0xFFFFFFFF)

# Refused with EPERM under the nix-daemon and in every jail: kernel-wide, and
# neither a build nor submitted code needs them.
DAEMON_DENIED = (
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "bpf", "perf_event_open", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff", "acct",
    "quotactl", "quotactl_fd", "init_module", "finit_module", "delete_module",
    "open_by_handle_at", "name_to_handle_at", "lookup_dcookie", "fanotify_init",
    "iopl", "ioperm", "syslog", "vhangup",
    "settimeofday", "clock_settime", "adjtimex", "clock_adjtime",
)

# Refused with EPERM in every jail of submitted code: the above, and what the
# nix-daemon's sandbox needs but a jail never may (mounts, namespaces, keyrings).
STAGE_DENIED = (
    *DAEMON_DENIED,
    "mount", "umount", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen",
    "fsconfig", "fsmount", "fspick", "mount_setattr", "unshare", "setns",
    "keyctl", "add_key", "request_key",
)

# What bash, coreutils, busybox, python (threads too), gcc-like toolchains and
# Nix building in the jail use. Not here on purpose (so ENOSYS): sync (a
# host-wide flush; libc's sync() returns nothing), sethostname, modify_ldt,
# get_robust_list, migrate_pages, move_pages, process_madvise, statmount,
# listmount, the lsm_* calls, memfd_secret and obsolete calls.
STAGE_ALLOWED = (
    # files and descriptors
    "read", "write", "open", "openat", "openat2", "close", "close_range", "creat",
    "newstat", "newfstat", "newlstat", "newfstatat", "statx", "statfs", "fstatfs",
    "lseek", "pread64", "pwrite64", "readv", "writev", "preadv", "pwritev",
    "preadv2", "pwritev2", "access", "faccessat", "faccessat2",
    "dup", "dup2", "dup3", "pipe", "pipe2", "fcntl", "flock", "ioctl",
    "fsync", "fdatasync", "syncfs", "sync_file_range", "truncate", "ftruncate",
    "fallocate", "fadvise64", "readahead",
    "getdents", "getdents64", "getcwd", "chdir", "fchdir",
    "rename", "renameat", "renameat2", "mkdir", "mkdirat", "rmdir",
    "link", "linkat", "unlink", "unlinkat", "symlink", "symlinkat",
    "readlink", "readlinkat", "mknod", "mknodat",
    "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "lchown", "fchownat",
    "umask", "utime", "utimes", "utimensat", "futimesat",
    "setxattr", "lsetxattr", "fsetxattr", "getxattr", "lgetxattr", "fgetxattr",
    "listxattr", "llistxattr", "flistxattr", "removexattr", "lremovexattr",
    "fremovexattr", "setxattrat", "getxattrat", "listxattrat", "removexattrat",
    "sendfile64", "splice", "tee", "vmsplice", "copy_file_range", "cachestat",
    "inotify_init", "inotify_init1", "inotify_add_watch", "inotify_rm_watch",
    "memfd_create",
    # waiting on descriptors
    "select", "pselect6", "poll", "ppoll", "epoll_create", "epoll_create1",
    "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2",
    "eventfd", "eventfd2", "signalfd", "signalfd4",
    "timerfd_create", "timerfd_settime", "timerfd_gettime",
    "io_setup", "io_destroy", "io_getevents", "io_pgetevents", "io_submit", "io_cancel",
    # memory
    "brk", "mmap", "munmap", "mremap", "mprotect", "msync", "mincore", "madvise",
    "mlock", "mlock2", "munlock", "mlockall", "munlockall", "membarrier",
    "pkey_mprotect", "pkey_alloc", "pkey_free", "mseal", "map_shadow_stack",
    "mbind", "set_mempolicy", "get_mempolicy", "set_mempolicy_home_node",
    # processes and threads (clone is filtered above)
    "clone", "fork", "vfork", "execve", "execveat", "exit", "exit_group",
    "wait4", "waitid", "kill", "tkill", "tgkill", "pidfd_open", "pidfd_send_signal",
    "arch_prctl", "prctl", "seccomp", "set_tid_address", "set_robust_list", "rseq",
    "futex", "futex_waitv", "futex_wake", "futex_wait", "futex_requeue",
    "getpid", "getppid", "gettid", "getpgid", "setpgid", "getpgrp", "getsid", "setsid",
    "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid", "getgroups",
    "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid",
    "setfsuid", "setfsgid", "setgroups", "capget", "capset",
    "getrlimit", "setrlimit", "prlimit64", "getrusage", "times", "sysinfo", "newuname",
    "getpriority", "setpriority", "ioprio_get", "ioprio_set",
    "sched_yield", "sched_getaffinity", "sched_setaffinity", "sched_getparam",
    "sched_setparam", "sched_getscheduler", "sched_setscheduler",
    "sched_get_priority_max", "sched_get_priority_min", "sched_rr_get_interval",
    "sched_getattr", "sched_setattr", "getcpu", "getrandom",
    "landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self",
    # signals and time
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending",
    "rt_sigtimedwait", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "rt_sigsuspend",
    "sigaltstack", "pause", "restart_syscall",
    "nanosleep", "clock_nanosleep", "clock_gettime", "clock_getres", "gettimeofday", "time",
    "alarm", "getitimer", "setitimer", "timer_create", "timer_settime",
    "timer_gettime", "timer_getoverrun", "timer_delete",
    # System V and POSIX IPC (the jail has an IPC namespace of its own)
    "shmget", "shmat", "shmdt", "shmctl", "semget", "semop", "semtimedop", "semctl",
    "msgget", "msgsnd", "msgrcv", "msgctl", "mq_open", "mq_unlink", "mq_timedsend",
    "mq_timedreceive", "mq_notify", "mq_getsetattr",
    # sockets (socket and socketpair are filtered above)
    "socket", "socketpair", "connect", "accept", "accept4", "bind", "listen",
    "shutdown", "getsockname", "getpeername", "setsockopt", "getsockopt",
    "sendto", "recvfrom", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg",
)


def _lines(items: list[str] | tuple[str, ...], per_line: int = 8) -> str:
    return ",\n    ".join(", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line))


def _family_rules() -> str:
    """Rules 1 and 2 of both policies: the socket families and types."""
    other_family = " && ".join(f"family != {number}" for number in ALLOWED_FAMILIES)
    raw = (f"(type & {SOCK_TYPE_MASK:#x}) == {SOCK_RAW} || "
           f"(type & {SOCK_TYPE_MASK:#x}) == {SOCK_PACKET}")
    return f"""
  ERRNO({EAFNOSUPPORT}) {{
    socket(family, type, protocol) {{ {other_family} }},
    socketpair(family, type, protocol, sv) {{ {other_family} }}
  }},
  ERRNO({EPERM}) {{
    socket(family, type, protocol) {{ {raw} }},
    socketpair(family, type, protocol, sv) {{ {raw} }}
  }},"""


def _x32() -> str:
    return _lines([f"SYSCALL[{X32_SYSCALL_BIT + number:#x}]" for number in range(X32_SYSCALLS)])


def _stage_policy() -> str:
    personas = " || ".join(f"persona == {value:#x}" for value in PERSONAS)
    return f"""
POLICY nixjail_stage {{{_family_rules()}
  ERRNO({EPERM}) {{
    {_lines(STAGE_DENIED)},
    clone {{ (clone_flags & {CLONE_NEW_ANY:#x}) != 0 }},
    ioctl(fd, request) {{ (request & 0xffffffff) == {TIOCSTI:#x} }}
  }},
  ALLOW {{
    {_lines(STAGE_ALLOWED)},
    personality(persona) {{ {personas} }}
  }}
}}
USE nixjail_stage DEFAULT ERRNO({ENOSYS})
"""


def _daemon_policy() -> str:
    return f"""
POLICY nixjail_daemon {{{_family_rules()}
  ERRNO({EPERM}) {{
    {_lines(DAEMON_DENIED)}
  }},
  ERRNO({ENOSYS}) {{
    {_x32()}
  }}
}}
USE nixjail_daemon DEFAULT ALLOW
"""


STAGE_POLICY = _stage_policy()
DAEMON_POLICY = _daemon_policy()
