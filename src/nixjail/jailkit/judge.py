"""The judging of a jailed run: status, exit code and signal, by one precedence.

The precedence, first that applies:
1. error: the run was stopped for reasons of its supervisor (deadline, shutdown),
   or nsjail itself failed (its own [E]/[F] log lines) while nothing killed it.
2. time_limit: the supervisor killed it at its wall or CPU time, its CPU time
   (every process of it) went past the limit, or RLIMIT_CPU's SIGXCPU ended it.
3. memory_limit: the supervisor killed it when its processes' memory reached the
   limit, the kernel OOM-killed in its cgroup, or its peak memory reached the limit.
4. output_limit: the supervisor killed it for output past the cap.
5. signaled, nonzero_exit, ok: what the run itself did.

A signal is read from the wait status of nsjail: a signal that killed nsjail,
or nsjail's (and a shell's) exit code 128+N for a child killed by signal N.
Exit code 255 is nsjail's own failure, never a signal.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

# Why a supervisor ended a run itself.
KILL_TIME = "time"
KILL_MEMORY = "memory"
KILL_OUTPUT = "output"
KILL_DEADLINE = "deadline"
KILL_TERMINATED = "terminated"
KILLS_FOR_ERROR = (KILL_DEADLINE, KILL_TERMINATED)

# The highest signal number (SIGRTMAX) on Linux.
MAX_SIGNAL = 64


@dataclass(frozen=True)
class Verdict:
    status: str
    exit_code: int | None
    signal: int | None


def exit_code_or_signal(wait_status: int) -> tuple[int | None, int | None]:
    """(exit_code, signal) from nsjail's raw wait status; one of them is None."""
    if os.WIFSIGNALED(wait_status):
        return None, os.WTERMSIG(wait_status)
    code = os.waitstatus_to_exitcode(wait_status)
    if 128 < code <= 128 + MAX_SIGNAL:
        return None, code - 128
    return code, None


def own_peak_kib(status: str = "/proc/self/status") -> int:
    """This process's peak resident memory (VmHWM), in KiB; 0 when unknown."""
    try:
        with open(status) as lines:
            for line in lines:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def child_peak_kib(ru_maxrss: int) -> int:
    """The waited child tree's own peak resident memory from its `ru_maxrss`, or
    0 when that figure says nothing.

    The kernel records in a process that execs the peak of the memory it had
    before, which for a child is its spawner's: every child of a 300 MiB
    supervisor reports at least 300 MiB, `true` too. A figure above the
    spawner's own peak can only be the child's; one at or below it may be
    only the spawner's, and the caller's cgroup figures must say the rest.
    Call it after the wait, so the peak read is the one recorded then or later.
    """
    return ru_maxrss if ru_maxrss > own_peak_kib() else 0


def jail_failed(log: str) -> bool:
    """nsjail's log (with --quiet, warnings and worse) says nsjail itself failed."""
    return any(line.startswith(("[E]", "[F]")) for line in log.splitlines())


def judge(
    *,
    wait_status: int,
    killed_for: str | None,
    cpu_ms: int,
    cpu_limit_ms: float,
    memory_kib: int,
    memory_limit_kib: int,
    oom_killed: bool,
    jail_error: bool,
) -> Verdict:
    """Judge one run by the precedence above."""
    exit_code, sig = exit_code_or_signal(wait_status)
    if killed_for in KILLS_FOR_ERROR or (jail_error and killed_for is None):
        return Verdict("error", exit_code, sig)
    if killed_for == KILL_TIME or cpu_ms > cpu_limit_ms or sig == signal.SIGXCPU:
        return Verdict("time_limit", exit_code, sig)
    if killed_for == KILL_MEMORY or oom_killed or memory_kib >= memory_limit_kib:
        return Verdict("memory_limit", exit_code, sig)
    if killed_for == KILL_OUTPUT:
        return Verdict("output_limit", exit_code, sig)
    if sig is not None:
        return Verdict("signaled", None, sig)
    if exit_code != 0:
        return Verdict("nonzero_exit", exit_code, None)
    return Verdict("ok", 0, None)
