"""One jailed run of the Nix client for a dependencies job.

The jail (nsjail, one run per job) holds only what evaluating a shell.nix
needs: read-only system directories and `/nix/store`, the nix-daemon's socket,
the configured nixpkgs at `/nixpkgs`, the submission's `shell.nix` at `/job`, an empty
tmpfs HOME and `/tmp` of its own, a writable `/out` for the results, and no
network. It runs as a non-root uid outside, so the nix-daemon treats it as an
untrusted user; Nix evaluates in restricted mode (`restrict-eval`,
`allowed-uris` from the settings), so the expression reads nothing outside
nixpkgs and the shell.nix's own directory.

The run's limits come from the request: wall time (the whole job is killed),
memory (the job's cgroup when the host has one, else `RLIMIT_AS`), CPU time
and processes (rlimits of the client), output (killed past the cap) and file
size (`RLIMIT_FSIZE`).
"""

from __future__ import annotations

import contextlib
import math
import os
import selectors
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from nixjail.cache_builder.cgroup import JobCgroup
from nixjail.errors import ToolError
from nixjail.models import ResolvedLimits, StageResult, StageStatus

JAIL_UID = 1000
JAIL_GID = 1000
JAIL_HOME = "/home/nixjail"
JOB_DIR = "/job"  # the submission's shell.nix, read-only
OUT_DIR = "/out"  # what the client leaves for the cache builder
TOOLS_DIR = "/nixjail"  # the build script, read-only
DAEMON_SOCKET_DIR = "/nix/var/nix/daemon-socket"
NIXPKGS_DIR = "/nixpkgs"
SYSTEM_DIRS = ("/bin", "/usr", "/lib", "/lib64", "/lib32", "/libx32")
# Two shells (nsjail's child and the script) beside what the limit allows.
WRAPPER_PROCESSES = 2
AS_FACTOR = 2
AS_SLACK_MIB = 64
# Nix asks Boehm GC for up to 384 MiB of heap at start; under a smaller
# memory limit that alone would look like the expression's fault.
MAX_INITIAL_HEAP = 384 * 1024 * 1024
KILL_GRACE_S = 0.3
READ_CHUNK = 65536

# Only what evaluation and talking to the daemon never need is refused (EPERM).
SECCOMP_POLICY = """
POLICY nixjail_cache_builder {
  ERRNO(1) {
    ptrace, process_vm_readv, process_vm_writev, kcmp,
    mount, umount, pivot_root, chroot, move_mount, open_tree, fsopen, fsconfig, fsmount,
    fspick, mount_setattr, unshare, setns,
    keyctl, add_key, request_key, bpf, perf_event_open, userfaultfd, io_uring_setup,
    kexec_load, kexec_file_load, reboot, swapon, swapoff, acct, quotactl,
    init_module, finit_module, delete_module,
    open_by_handle_at, name_to_handle_at, lookup_dcookie, fanotify_init,
    iopl, ioperm, syslog, vhangup,
    settimeofday, clock_settime, adjtimex, clock_adjtime,
    clone { (clone_flags & 0x7e020080) != 0 }
  },
  ERRNO(38) { clone3 }
}
USE nixjail_cache_builder DEFAULT ALLOW
"""

# The job in the jail: nix-build of the shell's inputDerivation (every package
# of the toolchain), then the environment script from `nix print-dev-env`.
# Both evaluate the same shell.nix in restricted mode; the build log is the
# stage's stderr.
BUILD_SCRIPT = """\
set -euo pipefail
opts=(--option restrict-eval true -I "nixjail-submission=/job")
"$NIXJAIL_NIX_BIN/nix-build" "${opts[@]}" --no-out-link -A inputDerivation /job/shell.nix \\
  > /out/inputs
"$NIXJAIL_NIX_BIN/nix" --extra-experimental-features nix-command print-dev-env \\
  "${opts[@]}" -f /job/shell.nix > /out/env.sh
read -r inputs < /out/inputs
echo "inputs: $inputs"
"""


@dataclass
class JailConfig:
    nsjail: str
    outside_uid: int
    outside_gid: int
    daemon_socket_dir: Path
    nixpkgs: Path | None
    allowed_uris: list[str] = field(default_factory=list)


@dataclass
class JailRun:
    """What one jailed run left: the stage result and the directory of its `/out`."""

    result: StageResult
    out_dir: Path
    killed_for: StageStatus | None = None


def _tool(name: str) -> Path:
    """A host binary by its real path, so it also works where PATH holds symlinks
    into /nix/store (NixOS): the store is mounted in the jail, /run is not."""
    found = shutil.which(name)
    if not found:
        raise ToolError(f"{name} is not installed on this cache builder")
    return Path(os.path.realpath(found))


def prepare_job_dir(job_dir: Path, shell_nix: str, config: JailConfig) -> None:
    """The jail's files: shell.nix, a generated /etc, the script, an empty /out."""
    job_dir.mkdir(mode=0o711, parents=True)
    (job_dir / "job").mkdir(mode=0o755)
    (job_dir / "job" / "shell.nix").write_text(shell_nix)
    (job_dir / "job" / "shell.nix").chmod(0o644)
    etc = job_dir / "etc"
    (etc / "nix").mkdir(mode=0o755, parents=True)
    (etc / "passwd").write_text(
        f"root:x:0:0::/:/bin/false\nnixjail:x:{JAIL_UID}:{JAIL_GID}::{JAIL_HOME}:/bin/bash\n")
    (etc / "group").write_text(f"root:x:0:\nnixjail:x:{JAIL_GID}:\n")
    (etc / "hosts").write_text("127.0.0.1 localhost nixjail\n")
    (etc / "nix" / "nix.conf").write_text(
        "# nixjail cache builder: the client's settings inside the jail\n"
        "experimental-features = nix-command\n"
        "restrict-eval = true\n"
        f"allowed-uris = {' '.join(config.allowed_uris)}\n")
    for file in etc.rglob("*"):
        file.chmod(0o755 if file.is_dir() else 0o644)
    etc.chmod(0o755)
    tools = job_dir / "tools"
    tools.mkdir(mode=0o755)
    (tools / "build.sh").write_text(BUILD_SCRIPT)
    (tools / "build.sh").chmod(0o644)
    out = job_dir / "out"
    out.mkdir(mode=0o700)
    os.chown(out, config.outside_uid, config.outside_gid)


def _nixpkgs_in_jail(nixpkgs: Path) -> str:
    """Where the jail sees the configured nixpkgs: a store path as it is."""
    return str(nixpkgs) if str(nixpkgs).startswith("/nix/store/") else NIXPKGS_DIR


def nsjail_command(config: JailConfig, job_dir: Path, limits: ResolvedLimits, *,
                   cgroup_limited: bool, command: list[str] | None = None) -> list[str]:
    """The nsjail argv of one job (`command` replaces the build script, for tests)."""
    nix_bin = _tool("nix-build").parent
    bash = _tool("bash")
    memory_bytes = limits.memory_mib * 1024 * 1024
    argv = [
        config.nsjail, "--mode", "o", "--quiet",
        "--log", str(job_dir / "nsjail.log"),
        "--hostname", "nixjail",
        "--cwd", JAIL_HOME,
        "--user", f"{JAIL_UID}:{config.outside_uid}:1",
        "--group", f"{JAIL_GID}:{config.outside_gid}:1",
        # The cache builder kills at the exact wall time; this is a backstop.
        "--time_limit", str(math.ceil(limits.wall_time_s) + 5),
        "--rlimit_cpu", str(max(1, math.ceil(limits.cpu_time_s))),
        "--rlimit_as", "inf" if cgroup_limited
        else str(limits.memory_mib * AS_FACTOR + AS_SLACK_MIB),
        "--rlimit_nproc", str(limits.processes + WRAPPER_PROCESSES),
        "--rlimit_fsize", str(max(1, math.ceil(limits.file_size_kib / 1024))),
        "--rlimit_nofile", "1024",
        "--rlimit_core", "0",
        "--seccomp_string", SECCOMP_POLICY,
    ]
    if not os.path.exists("/proc/self/ns/cgroup"):
        argv.append("--disable_clone_newcgroup")
    for directory in SYSTEM_DIRS:
        if os.path.isdir(directory):
            argv += ["--bindmount_ro", directory]
    argv += ["--bindmount_ro", "/nix/store"]
    argv += ["--bindmount_ro", f"{config.daemon_socket_dir}:{DAEMON_SOCKET_DIR}"]
    if config.nixpkgs is not None and not str(config.nixpkgs).startswith("/nix/store/"):
        # At a fixed place: its own path may lie under a directory the jail
        # mounts over (a nixpkgs checkout under /tmp would vanish there).
        argv += ["--bindmount_ro", f"{config.nixpkgs}:{NIXPKGS_DIR}"]
    argv += ["--bindmount_ro", f"{job_dir / 'etc'}:/etc"]
    argv += ["--bindmount_ro", f"{job_dir / 'job'}:{JOB_DIR}"]
    argv += ["--bindmount_ro", f"{job_dir / 'tools'}:{TOOLS_DIR}"]
    argv += ["--bindmount", f"{job_dir / 'out'}:{OUT_DIR}"]
    argv += ["--mount", "none:/dev:tmpfs:size=65536,mode=555"]
    for device in ("/dev/null", "/dev/zero", "/dev/full"):
        argv += ["--bindmount", device]
    for device in ("/dev/random", "/dev/urandom"):
        argv += ["--bindmount_ro", device]
    argv += ["--symlink", "/proc/self/fd:/dev/fd"]
    # A HOME and /tmp of this job alone: nothing (~/.cache/nix included) is
    # shared with another job. tmpfs pages count against the job's memory.
    argv += ["--mount", f"none:{JAIL_HOME}:tmpfs:size={memory_bytes},mode=700,"
                        f"uid={JAIL_UID},gid={JAIL_GID}"]
    argv += ["--mount", f"none:/tmp:tmpfs:size={memory_bytes},mode=1777"]
    env = {
        "PATH": f"{nix_bin}:/usr/bin:/bin",
        "HOME": JAIL_HOME,
        "USER": "nixjail",
        "LOGNAME": "nixjail",
        "LANG": "C.UTF-8",
        "TMPDIR": "/tmp",
        "NIX_REMOTE": "daemon",
        "NIX_CONF_DIR": "/etc/nix",
        "NIX_PATH": f"nixpkgs={_nixpkgs_in_jail(config.nixpkgs)}" if config.nixpkgs else "",
        "NIXJAIL_NIX_BIN": str(nix_bin),
        "GC_INITIAL_HEAP_SIZE": str(min(MAX_INITIAL_HEAP, memory_bytes // 4)),
    }
    for name, value in env.items():
        argv += ["--env", f"{name}={value}"]
    return [*argv, "--", *(command or [str(bash), f"{TOOLS_DIR}/build.sh"])]


class _Capped:
    """One output stream, kept up to its cap."""

    def __init__(self, cap_bytes: int) -> None:
        self.cap = cap_bytes
        self.data = bytearray()
        self.truncated = False

    def add(self, chunk: bytes) -> None:
        room = self.cap - len(self.data)
        if len(chunk) > room:
            self.truncated = True
        self.data += chunk[:max(0, room)]

    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


def run_jail(config: JailConfig, job_dir: Path, limits: ResolvedLimits, *,
             cgroup: JobCgroup | None, should_stop: callable = lambda: False,
             command: list[str] | None = None) -> JailRun:
    """Run the job's jail to its end (or its limits) and judge the outcome."""
    argv = nsjail_command(config, job_dir, limits, cgroup_limited=cgroup is not None,
                          command=command)
    if cgroup is not None:
        # The jail joins the job's cgroup before nsjail forks anything: the
        # shell moves itself (writing 0 means "this process"), then execs.
        argv = ["/bin/sh", "-c", 'echo 0 > "$0" && exec "$@"', str(cgroup.procs_file), *argv]
    ooms_before = cgroup.oom_kills() if cgroup else 0
    cap = limits.output_kib * 1024
    out, err = _Capped(cap), _Capped(cap)
    started = time.monotonic()
    deadline = started + limits.wall_time_s
    killed_for: StageStatus | None = None
    killed_at = 0.0
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
    except OSError as exc:
        raise ToolError(f"cannot start nsjail ({config.nsjail}): {exc.strerror}") from None
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ, out)
    selector.register(proc.stderr, selectors.EVENT_READ, err)
    open_streams = 2
    while open_streams:
        now = time.monotonic()
        if killed_for is None:
            if now >= deadline:
                killed_for = StageStatus.time_limit
            elif should_stop():
                killed_for = StageStatus.error
            if killed_for is not None:
                killed_at = now
                _kill(proc, cgroup)
        timeout = max(0.0, min(deadline - now, 0.1)) if killed_for is None else 0.1
        for key, _ in selector.select(timeout):
            chunk = os.read(key.fileobj.fileno(), READ_CHUNK)
            if not chunk:
                selector.unregister(key.fileobj)
                open_streams -= 1
                continue
            key.data.add(chunk)
            if key.data.truncated and killed_for is None:
                killed_for = StageStatus.output_limit
                killed_at = time.monotonic()
                _kill(proc, cgroup)
        if killed_for is not None and time.monotonic() - killed_at > 5:
            break  # streams held open by something outside the jail
    selector.close()
    _, wait_status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(wait_status)
    wall_ms = int((time.monotonic() - started) * 1000)
    for stream in (proc.stdout, proc.stderr):
        stream.close()
    if cgroup is not None:
        cgroup.kill_all()  # builders of a private daemon that outlived the client
    result = _judge(proc.returncode, killed_for, out, err, limits, job_dir,
                    oom_killed=cgroup is not None and cgroup.oom_kills() > ooms_before,
                    cgroup_limited=cgroup is not None)
    result.wall_time_ms = wall_ms
    result.cpu_time_ms = int((usage.ru_utime + usage.ru_stime) * 1000)
    if (result.cpu_time_ms > limits.cpu_time_s * 1000
            and result.status in (StageStatus.signaled, StageStatus.nonzero_exit)):
        result.status = StageStatus.time_limit  # killed at RLIMIT_CPU
    peak = cgroup.peak_bytes() // 1024 if cgroup else 0
    result.memory_kib = peak or usage.ru_maxrss
    return JailRun(result, job_dir / "out", killed_for)


def _kill(proc: subprocess.Popen, cgroup: JobCgroup | None) -> None:
    if cgroup is not None:
        cgroup.kill_all()
    # nsjail's child dies with it (it sets PDEATHSIG), and with that the jail.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _nsjail_problems(job_dir: Path) -> str:
    try:
        log = (job_dir / "nsjail.log").read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(line for line in log.splitlines() if line.startswith(("[E]", "[F]")))


def _judge(code: int, killed_for: StageStatus | None, out: _Capped, err: _Capped,
           limits: ResolvedLimits, job_dir: Path, *, oom_killed: bool,
           cgroup_limited: bool) -> StageResult:
    stderr = err.text()
    exit_code: int | None = code
    signal_number: int | None = None
    if code < 0:
        exit_code, signal_number = None, -code
    elif code > 128 and code != 255:
        # nsjail reports a child killed by signal N as 128+N, like a shell.
        exit_code, signal_number = None, code - 128
    problems = _nsjail_problems(job_dir)
    if killed_for is StageStatus.error:
        status = StageStatus.error
    elif killed_for is StageStatus.time_limit or signal_number == signal.SIGXCPU:
        status = StageStatus.time_limit
    elif oom_killed or (not cgroup_limited
                        and "error: out of memory" in stderr.splitlines()):
        status = StageStatus.memory_limit
    elif killed_for is StageStatus.output_limit:
        status = StageStatus.output_limit
    elif code == 255 and problems:
        status = StageStatus.error
        stderr += ("\n" if stderr else "") + problems
    elif signal_number is not None:
        status = StageStatus.signaled
    elif code != 0:
        status = StageStatus.nonzero_exit
    else:
        status = StageStatus.ok
    if status in (StageStatus.time_limit, StageStatus.output_limit) and killed_for:
        exit_code, signal_number = None, signal.SIGKILL
    return StageResult(status=status, exit_code=exit_code, signal=signal_number,
                       stdout=out.text(), stderr=stderr, stdout_truncated=out.truncated,
                       stderr_truncated=err.truncated)
