"""The judging of a jailed run: one precedence for container init and the cache builder."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

from nixjail.jailkit.judge import (
    KILL_DEADLINE,
    KILL_OUTPUT,
    KILL_TERMINATED,
    KILL_TIME,
    exit_code_or_signal,
    jail_failed,
    judge,
)
from nixjail.jailkit.nsjail import CPU_BACKSTOP_S, cpu_rlimit_s


def exited(code: int) -> int:
    return code << 8


def verdict(**kwargs):
    base = {
        "wait_status": 0,
        "killed_for": None,
        "cpu_ms": 10,
        "cpu_limit_ms": 1000,
        "memory_kib": 1000,
        "memory_limit_kib": 64 * 1024,
        "oom_killed": False,
        "jail_error": False,
    }
    base.update(kwargs)
    found = judge(**base)
    return found.status, found.exit_code, found.signal


def test_plain_outcomes():
    assert verdict() == ("ok", 0, None)
    assert verdict(wait_status=exited(3)) == ("nonzero_exit", 3, None)
    assert verdict(wait_status=exited(128 + 11)) == ("signaled", None, 11)
    assert verdict(wait_status=signal.SIGKILL) == ("signaled", None, 9)


def test_a_signal_is_read_one_way():
    assert exit_code_or_signal(exited(128 + 9)) == (None, 9)
    assert exit_code_or_signal(exited(128 + 64)) == (None, 64)
    assert exit_code_or_signal(signal.SIGSEGV) == (None, 11)
    # 255 is nsjail's own failure; 128 is a plain exit code.
    assert exit_code_or_signal(exited(255)) == (255, None)
    assert exit_code_or_signal(exited(128)) == (128, None)
    assert exit_code_or_signal(exited(128 + 65)) == (193, None)


def test_precedence():
    everything = {
        "wait_status": exited(128 + 9),
        "killed_for": KILL_OUTPUT,
        "oom_killed": True,
        "cpu_ms": 5000,
    }
    assert verdict(**everything)[0] == "time_limit"
    assert verdict(**{**everything, "cpu_ms": 10})[0] == "memory_limit"
    assert verdict(**{**everything, "cpu_ms": 10, "oom_killed": False})[0] == "output_limit"
    assert verdict(killed_for=KILL_TIME)[0] == "time_limit"
    assert verdict(memory_kib=64 * 1024)[0] == "memory_limit"
    assert verdict(memory_kib=64 * 1024 - 1)[0] == "ok"
    assert verdict(wait_status=exited(128 + signal.SIGXCPU))[0] == "time_limit"
    assert verdict(killed_for=KILL_DEADLINE, cpu_ms=5000)[0] == "error"
    assert verdict(killed_for=KILL_TERMINATED, oom_killed=True)[0] == "error"
    assert verdict(wait_status=exited(255), jail_error=True)[0] == "error"
    # nsjail's complaints after a kill of the supervisor's are not the jail's failure.
    assert verdict(wait_status=exited(255), jail_error=True, killed_for=KILL_TIME)[0] == (
        "time_limit")


def test_a_sigkill_below_the_cpu_limit_is_the_submissions_own():
    # Issue 9: on a loaded machine RLIMIT_CPU's SIGKILL came at 0.85 s of a 1 s limit
    # and the stage read `signaled`. The supervisor now kills at the limit itself
    # (killed_for=time); RLIMIT_CPU fires only past it, so a SIGKILL below the
    # limit that no supervisor sent is the submission's own `kill -9`.
    assert verdict(wait_status=exited(128 + 9), cpu_ms=850)[0] == "signaled"
    assert verdict(wait_status=exited(128 + 9), cpu_ms=850, killed_for=KILL_TIME)[0] == (
        "time_limit")
    for limit_s in (0.1, 0.5, 1.0, 1.5, 2.0, 10.0):
        assert cpu_rlimit_s(limit_s) >= limit_s + CPU_BACKSTOP_S
    assert CPU_BACKSTOP_S >= 1


def test_cpu_exactly_at_the_limit_is_within_it():
    assert verdict(cpu_ms=1000)[0] == "ok"
    assert verdict(cpu_ms=1001)[0] == "time_limit"


def test_jail_failed_reads_nsjails_own_lines():
    assert jail_failed("[E][2026] mount failed\n")
    assert jail_failed("[W] a warning\n[F] fatal\n")
    assert not jail_failed("[W] only a warning\n")
    assert not jail_failed("")


# A process that holds PARENT_MIB, then reports what child_peak_kib makes of
# the ru_maxrss of a child that holds nothing (true) and of one holding more.
PEAKS = """
import json, os, subprocess, sys
from nixjail.jailkit.judge import child_peak_kib, own_peak_kib
held = bytearray(int(sys.argv[1]) << 20)
for i in range(0, len(held), 4096):
    held[i] = 1
def peak(argv):
    child = subprocess.Popen(argv)  # kept: a dropped Popen may be reaped by subprocess
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss, child_peak_kib(usage.ru_maxrss)
grow = [sys.executable, "-c", "b = bytearray(%d << 20); [b.__setitem__(i, 1) "
        "for i in range(0, len(b), 4096)]" % (2 * int(sys.argv[1])), ]
print(json.dumps({"own": own_peak_kib(), "true": peak(["true"]), "grow": peak(grow)}))
"""


def test_a_childs_peak_memory_is_its_own_never_its_spawners() -> None:
    parent_mib = 200
    ran = subprocess.run([sys.executable, "-c", PEAKS, str(parent_mib)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert ran.returncode == 0, ran.stderr
    seen = json.loads(ran.stdout)
    assert seen["own"] >= parent_mib * 1024
    # The kernel gives `true` its spawner's peak; that figure is not the child's.
    raw, judged = seen["true"]
    assert raw >= parent_mib * 1024 and judged == 0, seen
    # A child that outgrows its spawner shows its own peak.
    raw, judged = seen["grow"]
    assert judged == raw >= 2 * parent_mib * 1024, seen
