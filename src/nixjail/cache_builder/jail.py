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
size (`RLIMIT_FSIZE`). The jail's common part (namespaces, rlimits, the
seccomp policy, /dev, /proc), the output capture and the judging are the jail
kit's (nixjail.jailkit), the same container init's stages use.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nixjail.cache_builder.cgroup import JobCgroup
from nixjail.errors import ToolError
from nixjail.jailkit.capture import Capture
from nixjail.jailkit.judge import (
    KILL_OUTPUT,
    KILL_TERMINATED,
    KILL_TIME,
    child_peak_kib,
    jail_failed,
    judge,
)
from nixjail.jailkit.nsjail import Bind, Identity, JailLimits, Mount, Tmpfs, nsjail_argv, preexec
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
# Nix asks Boehm GC for up to 384 MiB of heap at start; under a smaller
# memory limit that alone would look like the expression's fault.
MAX_INITIAL_HEAP = 384 * 1024 * 1024
KILL_GRACE_S = 0.3
READ_CHUNK = 65536

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
    # Explicit modes: the service's umask (0007) would close these to the
    # jail, which is already an unprivileged uid when nsjail mounts them.
    job_dir.mkdir(mode=0o711, parents=True)
    job_dir.chmod(0o711)
    (job_dir / "job").mkdir(mode=0o755)
    (job_dir / "job").chmod(0o755)
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
    tools.chmod(0o755)
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
    mounts: list[Mount] = [Bind(d, d) for d in SYSTEM_DIRS if os.path.isdir(d)]
    mounts += [Bind("/nix/store", "/nix/store"),
               Bind(str(config.daemon_socket_dir), DAEMON_SOCKET_DIR)]
    if config.nixpkgs is not None and not str(config.nixpkgs).startswith("/nix/store/"):
        # At a fixed place: its own path may lie under a directory the jail
        # mounts over (a nixpkgs checkout under /tmp would vanish there).
        mounts.append(Bind(str(config.nixpkgs), NIXPKGS_DIR))
    mounts += [
        Bind(str(job_dir / "etc"), "/etc"),
        Bind(str(job_dir / "job"), JOB_DIR),
        Bind(str(job_dir / "tools"), TOOLS_DIR),
        Bind(str(job_dir / "out"), OUT_DIR, writable=True),
        # A HOME and /tmp of this job alone: nothing (~/.cache/nix included) is
        # shared with another job. tmpfs pages count against the job's memory.
        Tmpfs(JAIL_HOME, memory_bytes, f"mode=700,uid={JAIL_UID},gid={JAIL_GID}"),
        Tmpfs("/tmp", memory_bytes),
    ]
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
    return nsjail_argv(
        config.nsjail,
        identity=Identity(JAIL_UID, JAIL_GID, config.outside_uid, config.outside_gid),
        limits=JailLimits(wall_time_s=limits.wall_time_s, cpu_time_s=limits.cpu_time_s,
                          memory_mib=limits.memory_mib, processes=limits.processes,
                          address_space_limited=not cgroup_limited),
        cwd=JAIL_HOME,
        mounts=mounts,
        env=env,
        command=command or [str(bash), f"{TOOLS_DIR}/build.sh"],
        log=str(job_dir / "nsjail.log"),
    )


def run_jail(config: JailConfig, job_dir: Path, limits: ResolvedLimits, *,
             cgroup: JobCgroup | None, should_stop: Callable[[], bool] = lambda: False,
             command: list[str] | None = None) -> JailRun:
    """Run the job's jail to its end (or its limits) and judge the outcome."""
    argv = nsjail_command(config, job_dir, limits, cgroup_limited=cgroup is not None,
                          command=command)
    if cgroup is not None:
        argv = cgroup.join_argv(argv)  # in before nsjail forks anything
    ooms_before = cgroup.oom_kills() if cgroup else 0
    cap = limits.output_kib * 1024
    out, err = Capture(cap), Capture(cap)
    started = time.monotonic()
    deadline = started + limits.wall_time_s
    killed_for: str | None = None
    killed_at = 0.0
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True,
                                preexec_fn=preexec(limits.file_size_kib * 1024))
    except OSError as exc:
        raise ToolError(f"cannot start nsjail ({config.nsjail}): {exc.strerror}") from None
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ, out)
    selector.register(proc.stderr, selectors.EVENT_READ, err)
    open_streams = 2
    # What the job's builds may write to disk in all: no output file can pass
    # file_size_kib then, as no file a stage writes can.
    written_limit = limits.file_size_kib * 1024
    wrote_too_much = False
    while open_streams:
        now = time.monotonic()
        if killed_for is None:
            if now >= deadline:
                killed_for = KILL_TIME
            elif should_stop():
                killed_for = KILL_TERMINATED
            if killed_for is not None:
                killed_at = now
                _kill(proc, cgroup)
            elif cgroup is not None and cgroup.written_bytes() > written_limit:
                # The Nix sandbox writes outputs straight into the store's
                # filesystem, out of RLIMIT_FSIZE's reach (the daemon, root, must
                # write the host's Nix database). Only the builders die, as build
                # users: the daemon then fails their builds and the client reports
                # it. Polled, this stops a large writer; the count after the jail
                # (below) catches one that was quicker than the poll.
                cgroup.kill_uids_except({0, config.outside_uid})
                wrote_too_much = True
        timeout = max(0.0, min(deadline - now, 0.1)) if killed_for is None else 0.1
        for key, _ in selector.select(timeout):
            chunk = os.read(key.fileobj.fileno(), READ_CHUNK)
            if not chunk:
                selector.unregister(key.fileobj)
                open_streams -= 1
                continue
            if not key.data.add(chunk) and killed_for is None:
                killed_for = KILL_OUTPUT
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
        # A private daemon is still there: its figure holds every build it reaped.
        wrote_too_much |= cgroup.written_bytes() > written_limit
        cgroup.kill_all()  # builders of a private daemon that outlived the client
    tree_cpu_ms = int((usage.ru_utime + usage.ru_stime) * 1000)
    peak_kib = cgroup.peak_bytes() // 1024 if cgroup else 0
    client_kib = child_peak_kib(usage.ru_maxrss)  # 0: no more than this process's own
    stderr = err.text()
    problems = _nsjail_problems(job_dir)
    # Without a cgroup, RLIMIT_AS ends an expression that allocates too much: Nix says so.
    out_of_memory = (cgroup.oom_kills() > ooms_before if cgroup is not None
                     else "error: out of memory" in stderr.splitlines())
    verdict = judge(
        wait_status=wait_status,
        killed_for=killed_for,
        cpu_ms=tree_cpu_ms,
        cpu_limit_ms=limits.cpu_time_s * 1000,
        # The client's resident peak: the cgroup's peak counts page cache up to its limit.
        memory_kib=client_kib,
        memory_limit_kib=limits.memory_mib * 1024,
        oom_killed=out_of_memory,
        jail_error=bool(problems),
    )
    if verdict.status == StageStatus.error and problems and killed_for is None:
        stderr += ("\n" if stderr else "") + problems
    status = verdict.status
    if wrote_too_much and status in (StageStatus.ok, StageStatus.nonzero_exit,
                                      StageStatus.signaled):
        status = StageStatus.output_limit
        stderr += (f"\nnixjail: the builds of this environment wrote more than "
                   f"{limits.file_size_kib} KiB to disk (file_size_kib)\n")
    result = StageResult(
        status=status, exit_code=verdict.exit_code, signal=verdict.signal,
        stdout=out.text(), stderr=stderr,
        stdout_truncated=out.truncated, stderr_truncated=err.truncated,
        stdout_binary=out.binary, stderr_binary=err.binary,
        wall_time_ms=wall_ms, cpu_time_ms=tree_cpu_ms, memory_kib=peak_kib or client_kib)
    return JailRun(result, job_dir / "out", _KILLED_AS.get(killed_for))


# What the cache builder's callers read from a kill of its own.
_KILLED_AS = {KILL_TIME: StageStatus.time_limit, KILL_OUTPUT: StageStatus.output_limit,
              KILL_TERMINATED: StageStatus.error}


def _kill(proc: subprocess.Popen, cgroup: JobCgroup | None) -> None:
    if cgroup is not None:
        cgroup.kill_all()
    # nsjail's child dies with it (it sets PDEATHSIG), and with that the jail.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _nsjail_problems(job_dir: Path) -> str:
    """nsjail's own error lines, when its log says it failed."""
    try:
        log = (job_dir / "nsjail.log").read_text(errors="replace")
    except FileNotFoundError:
        return ""
    if not jail_failed(log):
        return ""
    return "\n".join(line for line in log.splitlines() if line.startswith(("[E]", "[F]")))
