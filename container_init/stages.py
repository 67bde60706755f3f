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
from datetime import UTC, datetime
from pathlib import Path

from jailkit.capture import Capture
from jailkit.cgroup import CpuCgroup, MemoryCgroup
from jailkit.judge import (
    KILL_DEADLINE,
    KILL_MEMORY,
    KILL_OUTPUT,
    KILL_TERMINATED,
    KILL_TIME,
    KILLS_FOR_ERROR,
    child_peak_kib,
    jail_failed,
    judge,
)
from jailkit.nsjail import preexec

from jail import JailSpec, nsjail_command
from protocol import StageResult
from reaper import Reaper

__all__ = ["KILL_DEADLINE", "KILL_OUTPUT", "KILL_TERMINATED", "KILL_TIME", "Outcome",
           "StageMeter", "run_jailed"]

READ_CHUNK = 1 << 16
LOG_CAP = 1 << 16
# Killing a stage: its processes are killed every REKILL_S; past KILL_GRACE_S the jail's
# PID 1 too, and past another KILL_GRACE_S nsjail itself.
REKILL_S = 0.02
KILL_GRACE_S = 0.3
# Output still buffered in the pipes once nsjail is gone is read for at most this long.
DRAIN_GRACE_S = 0.5
# The CPU check sleeps until the limit could first be reached, but never less than this.
CPU_CHECK_MIN_S = 0.005
# How often the stage's own memory is read against its limit.
MEMORY_CHECK_S = 0.02


@dataclass
class Outcome:
    result: StageResult
    # Set when init had to stop the stage for its own reasons (deadline, SIGTERM).
    interrupted: str | None = None
    # What the stage wrote to stdout, as kept (for a checker).
    stdout: bytes = b""


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _own_cpu_ns() -> int:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return round((usage.ru_utime + usage.ru_stime) * 1e9)


PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def _own_anon_bytes() -> int:
    """Init's own anonymous memory (resident minus file-backed pages, from statm)."""
    try:
        _, resident, shared, *_ = map(int, Path("/proc/self/statm").read_text().split())
    except (OSError, ValueError):
        return 0
    return (resident - shared) * PAGE_BYTES


class StageMeter:
    """The whole stage's CPU time and memory, from the container's cgroup.

    Container init is alone in its container with the stage, so what the container's
    cgroup counted during the stage, minus init's own use, is the stage's: every
    process of it, those that outlive the stage's shell included (the kernel reaps
    those without accounting to anyone when the jail's PID 1 ends). Without such a
    cgroup (init not PID 1, as on a test host) the limit is enforced on the jail's
    process tree, polled from /proc, and the figure is the waited tree's.

    Memory likewise: what the stage's processes hold (the container's anonymous
    memory, less init's own) is read against the stage's limit while it runs.
    The container's limit is set above the stage's, with room for the tmpfs
    files (and the private store a build fills), so this is what holds a stage
    to its own `memory_mib`; the kernel's OOM kill is the backstop.
    """

    def __init__(self, cpu: CpuCgroup | None, memory: MemoryCgroup | None) -> None:
        self.cpu = cpu if os.getpid() == 1 else None
        self.memory = memory
        self.cpu_start = self.cpu.usage_ns() if self.cpu else None
        self.own_start = _own_cpu_ns()
        if self.cpu_start is None:
            self.cpu = None
        self.oom_start = memory.oom_kills() if memory else None
        self.resident_start = memory.resident_bytes() if memory and self.cpu else None
        self.resident_peak = 0
        self.anon_start = memory.anon_bytes() if memory and self.cpu else None
        self.own_anon_start = _own_anon_bytes()
        self.anon_peak = 0
        # The most CPU the stage can burn per second of wall time.
        self.cpus = len(os.sched_getaffinity(0))
        self.tree_root: int | None = None

    def attach(self, nsjail_pid: int) -> None:
        """The stage's nsjail, whose tree is metered when there is no container cgroup."""
        self.tree_root = nsjail_pid

    def cpu_ns(self) -> int | None:
        """CPU time of the stage so far, or None without the container's cgroup."""
        used = self.cpu.usage_ns() if self.cpu else None
        if used is None or self.cpu_start is None:
            return None
        return max(0, used - self.cpu_start - (_own_cpu_ns() - self.own_start))

    def _enforced_cpu_ns(self) -> int | None:
        exact = self.cpu_ns()
        if exact is not None or self.tree_root is None:
            return exact
        return _tree_cpu_ns(self.tree_root)

    def sample_memory(self) -> None:
        if self.memory and self.resident_start is not None:
            now = self.memory.resident_bytes()
            if now is not None:
                self.resident_peak = max(self.resident_peak, now - self.resident_start)

    def memory_metered(self) -> bool:
        return self.anon_start is not None

    def memory_reached(self, limit_bytes: int) -> bool:
        """Whether the stage's processes hold `limit_bytes` or more now."""
        now = self.memory.anon_bytes() if self.memory and self.anon_start is not None else None
        if now is None or self.anon_start is None:
            return False
        held = now - self.anon_start - (_own_anon_bytes() - self.own_anon_start)
        self.anon_peak = max(self.anon_peak, held)
        return held >= limit_bytes

    def check_in_s(self, limit_ns: float) -> float | None:
        """Seconds until the stage could first reach `limit_ns` of CPU; None: not metered,
        0: reached."""
        used = self._enforced_cpu_ns()
        if used is None:
            return None
        self.sample_memory()
        if used >= limit_ns:
            return 0.0
        return max(CPU_CHECK_MIN_S, (limit_ns - used) / 1e9 / self.cpus)

    def oom_killed(self) -> bool:
        after = self.memory.oom_kills() if self.memory else None
        return self.oom_start is not None and after is not None and after > self.oom_start


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


CLOCK_TICK_NS = 1e9 / os.sysconf("SC_CLK_TCK")


def _tree_cpu_ns(root: int) -> int:
    """CPU time of a live process tree: each process's own and its reaped children's."""
    total = 0
    pending = [root]
    while pending:
        pid = pending.pop()
        pending += _children(pid)
        with contextlib.suppress(OSError, ValueError, IndexError):
            # Fields after the command name, which may hold spaces: utime is the 14th.
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            total += sum(map(int, fields[11:15]))
    return round(total * CLOCK_TICK_NS)


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
    meter: StageMeter,
    output_base64: bool = False,
) -> Outcome:
    """Run `command` in nsjail under spec.limits; deadline is init's overall monotonic end.
    Outputs come back as text when they are UTF-8, else (or with `output_base64`) base64."""
    limits = spec.limits
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    log_r, log_w = os.pipe()
    spec = replace(spec, log_fd=log_w)
    cpu_limit_ns = limits.cpu_time_s * 1e9

    started = time.monotonic()
    started_at = now_iso()
    stdin_file = open(stdin_path, "rb") if stdin_path else open(os.devnull, "rb")  # noqa: SIM115
    try:
        proc = subprocess.Popen(
            nsjail_command(spec, command),
            stdin=stdin_file,
            stdout=out_w,
            stderr=err_w,
            pass_fds=(log_w,),
            preexec_fn=preexec(limits.file_size_kib * 1024),
            start_new_session=True,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        )
    except OSError as exc:
        for fd in (out_r, out_w, err_r, err_w, log_r, log_w):
            os.close(fd)
        return Outcome(StageResult(status="error", stderr=f"nixjail: cannot start nsjail: {exc}",
                                   started_at=started_at, finished_at=now_iso()))
    finally:
        stdin_file.close()
    reaper.watch(proc.pid)
    meter.attach(proc.pid)
    for fd in (out_w, err_w, log_w):
        os.close(fd)

    captures = {
        out_r: Capture(limits.output_kib * 1024),
        err_r: Capture(limits.output_kib * 1024),
        log_r: Capture(LOG_CAP),
    }
    selector = selectors.DefaultSelector()
    for fd in captures:
        selector.register(fd, selectors.EVENT_READ)
    selector.register(reaper.wake_fd, selectors.EVENT_READ)

    wall_end = started + limits.wall_time_s
    kill_at, kill_why = (wall_end, KILL_TIME) if wall_end <= deadline else (deadline, KILL_DEADLINE)
    cpu_check_at: float | None = started
    memory_limit_bytes = limits.memory_mib * 1024 * 1024
    memory_check_at: float | None = started if meter.memory_metered() else None
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
            if kill_reason is None and cpu_check_at is not None and now >= cpu_check_at:
                wait_s = meter.check_in_s(cpu_limit_ns)
                cpu_check_at = None if wait_s is None else now + wait_s
                if wait_s == 0.0:
                    kill(KILL_TIME)
            if kill_reason is None and memory_check_at is not None and now >= memory_check_at:
                memory_check_at = now + MEMORY_CHECK_S
                if meter.memory_reached(memory_limit_bytes):
                    kill(KILL_MEMORY)
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
            wake_times = [kill_at, escalate_at, rekill_at, nsjail_kill_at,
                          *((cpu_check_at, memory_check_at) if kill_reason is None else ())]
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

    # nsjail has reaped the jail's PID 1, which the kernel lets go only once every
    # process of its namespace is gone: the cgroup's figures are final.
    usage = child.rusage
    tree_cpu_ms = round((usage.ru_utime + usage.ru_stime) * 1000)
    stage_cpu_ns = meter.cpu_ns()
    cpu_ms = tree_cpu_ms if stage_cpu_ns is None else max(tree_cpu_ms, round(stage_cpu_ns / 1e6))
    # KiB on Linux: the largest process of nsjail's waited tree (where that figure
    # is not container init's own), or the stage's whole resident memory as the
    # container's cgroup showed it.
    memory_kib = max(child_peak_kib(int(usage.ru_maxrss)), meter.resident_peak // 1024,
                     meter.anon_peak // 1024)
    log = captures[log_r].text()
    jail_error = jail_failed(log)
    if log:
        print(f"nixjail-init: nsjail said: {log.rstrip()}", file=sys.stderr)
    verdict = judge(
        wait_status=child.status,
        killed_for=kill_reason,
        cpu_ms=cpu_ms,
        cpu_limit_ms=limits.cpu_time_s * 1000,
        memory_kib=memory_kib,
        memory_limit_kib=limits.memory_mib * 1024,
        oom_killed=meter.oom_killed(),
        jail_error=jail_error,
    )
    out, err = captures[out_r], captures[err_r]
    note = f"\nnixjail: the jail failed: {log.strip()}\n".encode() \
        if verdict.status == "error" and jail_error else b""
    stdout, stdout_encoding = out.encoded(force_base64=output_base64)
    stderr, stderr_encoding = err.encoded(force_base64=output_base64, note=note)
    result = StageResult(
        status=verdict.status,
        exit_code=verdict.exit_code,
        signal=verdict.signal,
        stdout=stdout,
        stderr=stderr,
        stdout_encoding=stdout_encoding,
        stderr_encoding=stderr_encoding,
        started_at=started_at,
        finished_at=now_iso(),
        stdout_truncated=out.truncated,
        stderr_truncated=err.truncated,
        stdout_binary=out.binary,
        stderr_binary=err.binary,
        wall_time_ms=round((ended - started) * 1000),
        cpu_time_ms=cpu_ms,
        memory_kib=memory_kib,
    )
    interrupted = kill_reason if kill_reason in KILLS_FOR_ERROR else None
    return Outcome(result, interrupted, bytes(out.data))
