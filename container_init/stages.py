"""Run one stage in nsjail: pump its output, enforce wall time and output caps, classify."""

from __future__ import annotations

import contextlib
import os
import resource
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from cgroup import MemoryCgroup
from jail import JailSpec, cpu_rlimit_s, nsjail_command
from protocol import Limits, StageResult
from reaper import Reaper

READ_CHUNK = 1 << 16
LOG_CAP = 1 << 16
# Killing a stage: its processes are killed every REKILL_S; past KILL_GRACE_S the jail's
# PID 1 too, and past another KILL_GRACE_S nsjail itself.
REKILL_S = 0.02
KILL_GRACE_S = 0.3
# Output still buffered in the pipes once nsjail is gone is read for at most this long.
DRAIN_GRACE_S = 0.5

# Why init ended a stage itself.
KILL_TIME = "time"
KILL_OUTPUT = "output"
KILL_DEADLINE = "deadline"
KILL_TERMINATED = "terminated"


@dataclass
class Outcome:
    result: StageResult
    # Set when init had to stop the stage for its own reasons (deadline, SIGTERM).
    interrupted: str | None = None


@dataclass
class _Capture:
    cap: int
    data: bytearray
    truncated: bool = False

    def add(self, chunk: bytes) -> bool:
        """Keep what fits under the cap; return False once output went past it."""
        room = self.cap - len(self.data)
        self.data += chunk[: max(room, 0)]
        if len(chunk) > room:
            self.truncated = True
        return not self.truncated


def classify(
    *,
    wait_status: int,
    kill_reason: str | None,
    limits: Limits,
    cpu_ms: int,
    memory_kib: int,
    oom_killed: bool,
    jail_error: bool,
) -> tuple[str, int | None, int | None]:
    """Return (status, exit_code, signal) by the precedence the protocol fixes."""
    exit_code: int | None = None
    sig: int | None = None
    if os.WIFSIGNALED(wait_status):
        sig = os.WTERMSIG(wait_status)
    else:
        code = os.waitstatus_to_exitcode(wait_status)
        # nsjail (like a shell) reports a child killed by signal N as exit code 128+N.
        if 128 < code <= 128 + signal.NSIG:
            sig = code - 128
        else:
            exit_code = code

    if kill_reason in (KILL_DEADLINE, KILL_TERMINATED) or (jail_error and kill_reason is None):
        return "error", exit_code, sig
    cpu_limit_ms = limits.cpu_time_s * 1000
    # RLIMIT_CPU sends SIGKILL at the whole-second limit; usage may read a hair below it.
    cpu_killed = sig == signal.SIGXCPU or (
        sig == signal.SIGKILL and cpu_ms >= cpu_rlimit_s(limits) * 1000 - 100
    )
    if kill_reason == KILL_TIME or cpu_ms > cpu_limit_ms or cpu_killed:
        return "time_limit", exit_code, sig
    if oom_killed or memory_kib >= limits.memory_mib * 1024:
        return "memory_limit", exit_code, sig
    if kill_reason == KILL_OUTPUT:
        return "output_limit", exit_code, sig
    if sig is not None:
        return "signaled", None, sig
    if exit_code != 0:
        return "nonzero_exit", exit_code, None
    return "ok", 0, None


def _jail_error(log: str) -> bool:
    # --quiet leaves only warnings and worse; [E]/[F] lines mean nsjail itself failed.
    return any(line.startswith(("[E]", "[F]")) for line in log.splitlines())


def _children(pid: int) -> list[int]:
    found = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        with contextlib.suppress(OSError):
            found += map(int, Path(f"/proc/{pid}/task/{task}/children").read_text().split())
    return found


def _kill_jail(nsjail_pid: int, *, final: bool) -> None:
    """SIGKILL what runs in the jail.

    First everything below the jail's PID 1: the PID 1 shell then reaps the stage shell
    and exits by itself, so the CPU time and peak memory still reach init through wait4
    (when PID 1 dies first the kernel reaps the rest without accounting). `final` kills
    PID 1 too, which takes the whole PID namespace down at once.
    """
    for jail_init in _children(nsjail_pid) or ([nsjail_pid] if final else []):
        pending = [jail_init] if final else _children(jail_init)
        while pending:
            pid = pending.pop()
            pending += _children(pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def run_jailed(
    spec: JailSpec,
    command: list[str],
    *,
    stdin_path: Path | None,
    reaper: Reaper,
    deadline: float,
    memory_cgroup: MemoryCgroup | None,
) -> Outcome:
    """Run `command` in nsjail under spec.limits; deadline is init's overall monotonic end."""
    limits = spec.limits
    oom_before = memory_cgroup.oom_kills() if memory_cgroup else None
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    log_r, log_w = os.pipe()
    spec = replace(spec, log_fd=log_w)
    fsize = limits.file_size_kib * 1024

    def set_file_size() -> None:
        # RLIMIT_FSIZE in bytes; nsjail passes it on ("--rlimit_fsize soft").
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    started = time.monotonic()
    stdin_file = open(stdin_path, "rb") if stdin_path else open(os.devnull, "rb")  # noqa: SIM115
    try:
        proc = subprocess.Popen(
            nsjail_command(spec, command),
            stdin=stdin_file,
            stdout=out_w,
            stderr=err_w,
            pass_fds=(log_w,),
            preexec_fn=set_file_size,
            start_new_session=True,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        )
    except OSError as exc:
        for fd in (out_r, out_w, err_r, err_w, log_r, log_w):
            os.close(fd)
        return Outcome(StageResult(status="error", stderr=f"nixjail: cannot start nsjail: {exc}"))
    finally:
        stdin_file.close()
    reaper.watch(proc.pid)
    for fd in (out_w, err_w, log_w):
        os.close(fd)

    captures = {
        out_r: _Capture(limits.output_kib * 1024, bytearray()),
        err_r: _Capture(limits.output_kib * 1024, bytearray()),
        log_r: _Capture(LOG_CAP, bytearray()),
    }
    selector = selectors.DefaultSelector()
    for fd in captures:
        selector.register(fd, selectors.EVENT_READ)
    selector.register(reaper.wake_fd, selectors.EVENT_READ)

    wall_end = started + limits.wall_time_s
    kill_at, kill_why = (wall_end, KILL_TIME) if wall_end <= deadline else (deadline, KILL_DEADLINE)
    kill_reason: str | None = None
    escalate_at: float | None = None
    rekill_at: float | None = None
    nsjail_kill_at: float | None = None
    child = None
    drain_until: float | None = None

    def kill(reason: str) -> None:
        nonlocal kill_reason, escalate_at, rekill_at
        if kill_reason is None:
            kill_reason = reason
            escalate_at = time.monotonic() + KILL_GRACE_S
            rekill_at = time.monotonic() + REKILL_S
            _kill_jail(proc.pid, final=False)

    while True:
        now = time.monotonic()
        if child is None:
            child = reaper.exited(proc.pid)
            if child is not None:
                ended = now
                proc.returncode = os.waitstatus_to_exitcode(child.status)
                drain_until = now + DRAIN_GRACE_S
        if child is not None and (len(selector.get_map()) == 1 or now >= drain_until):
            break
        if child is None:
            if reaper.terminate_signal is not None:
                kill(KILL_TERMINATED)
            if kill_reason is None and now >= kill_at:
                kill(kill_why)
            if escalate_at is not None and now >= escalate_at:
                # Processes forked faster than they were killed: end the namespace.
                _kill_jail(proc.pid, final=True)
                escalate_at, rekill_at = None, None
                nsjail_kill_at = now + KILL_GRACE_S
            elif rekill_at is not None and now >= rekill_at:
                _kill_jail(proc.pid, final=False)
                rekill_at = now + REKILL_S
            if nsjail_kill_at is not None and now >= nsjail_kill_at:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                nsjail_kill_at = None
        wake_times = [drain_until]
        if child is None:
            wake_times = [kill_at, escalate_at, rekill_at, nsjail_kill_at]
        upcoming = [t for t in wake_times if t is not None and t > now]
        timeout = max(0.0, min(upcoming) - now) if upcoming else 0.05
        for key, _ in selector.select(timeout):
            fd = key.fd
            if fd == reaper.wake_fd:
                reaper.drain_wakeups()
                continue
            chunk = os.read(fd, READ_CHUNK)
            if not chunk:
                selector.unregister(fd)
                os.close(fd)
            elif not captures[fd].add(chunk) and fd != log_r:
                kill(KILL_OUTPUT)
    for fd in list(selector.get_map()):
        selector.unregister(fd)
        if fd != reaper.wake_fd:
            os.close(fd)
    selector.close()

    usage = child.rusage
    cpu_ms = round((usage.ru_utime + usage.ru_stime) * 1000)
    memory_kib = int(usage.ru_maxrss)  # KiB on Linux; the maximum over nsjail's waited tree
    oom_after = memory_cgroup.oom_kills() if memory_cgroup else None
    oom_killed = oom_before is not None and oom_after is not None and oom_after > oom_before
    log = captures[log_r].data.decode(errors="replace")
    jail_error = _jail_error(log)
    if log:
        print(f"nixjail-init: nsjail said: {log.rstrip()}", file=sys.stderr)
    status, exit_code, sig = classify(
        wait_status=child.status,
        kill_reason=kill_reason,
        limits=limits,
        cpu_ms=cpu_ms,
        memory_kib=memory_kib,
        oom_killed=oom_killed,
        jail_error=jail_error,
    )
    stderr = captures[err_r].data.decode(errors="replace")
    if status == "error" and jail_error:
        stderr += f"\nnixjail: the jail failed: {log.strip()}\n"
    result = StageResult(
        status=status,
        exit_code=exit_code,
        signal=sig,
        stdout=captures[out_r].data.decode(errors="replace"),
        stderr=stderr,
        stdout_truncated=captures[out_r].truncated,
        stderr_truncated=captures[err_r].truncated,
        wall_time_ms=round((ended - started) * 1000),
        cpu_time_ms=cpu_ms,
        memory_kib=memory_kib,
    )
    interrupted = kill_reason if kill_reason in (KILL_DEADLINE, KILL_TERMINATED) else None
    return Outcome(result, interrupted)
