"""Pure parts of container init: job parsing and the status rules."""

from __future__ import annotations

import json
import signal

import pytest
from init_helpers import limits, make_job

from protocol import (
    JobError,
    Limits,
    parse_job,
    skipped,
)
from stages import KILL_DEADLINE, KILL_OUTPUT, KILL_TIME, classify

LIMITS = Limits(**limits(cpu_time_s=1.0, memory_mib=64))


def status_of(**kwargs):
    base = {
        "wait_status": 0,
        "kill_reason": None,
        "limits": LIMITS,
        "cpu_ms": 10,
        "memory_kib": 1000,
        "oom_killed": False,
        "jail_error": False,
    }
    base.update(kwargs)
    return classify(**base)


def exited(code: int) -> int:
    return code << 8


def test_plain_outcomes():
    assert status_of() == ("ok", 0, None)
    assert status_of(wait_status=exited(3)) == ("nonzero_exit", 3, None)
    assert status_of(wait_status=exited(128 + 11)) == ("signaled", None, 11)


def test_precedence():
    everything = {
        "wait_status": exited(128 + 9),
        "kill_reason": KILL_OUTPUT,
        "oom_killed": True,
        "cpu_ms": 5000,
    }
    assert status_of(**everything)[0] == "time_limit"
    assert status_of(**{**everything, "cpu_ms": 10})[0] == "memory_limit"
    assert status_of(**{**everything, "cpu_ms": 10, "oom_killed": False})[0] == "output_limit"
    assert status_of(kill_reason=KILL_TIME)[0] == "time_limit"
    assert status_of(memory_kib=64 * 1024)[0] == "memory_limit"
    assert status_of(wait_status=exited(128 + signal.SIGXCPU))[0] == "time_limit"
    assert status_of(kill_reason=KILL_DEADLINE)[0] == "error"
    assert status_of(wait_status=exited(255), jail_error=True)[0] == "error"


def test_parse_job_accepts_the_contract():
    job = parse_job(json.dumps(make_job("true", files={
        "a/b.txt": {"content": "aGk=", "encoding": "base64"}, "c": "plain"})).encode())
    assert job.files == {"a/b.txt": b"hi", "c": b"plain"}
    assert job.compile_sh is None and job.environment.kind == "none"


@pytest.mark.parametrize("name", ["/etc/passwd", "../x", "a/../../x", "", "a//b"])
def test_parse_job_rejects_bad_file_names(name):
    with pytest.raises(JobError):
        parse_job(json.dumps(make_job("true", files={name: "x"})).encode())


def test_parse_job_needs_dependencies_limits_for_builds():
    job = make_job("true", environment={"kind": "build", "shell_nix": "{}: null"})
    del job["limits"]["dependencies"]
    with pytest.raises(JobError, match="dependencies"):
        parse_job(json.dumps(job).encode())


def test_skipped_results():
    assert skipped("dependencies").to_json()["cached"] is False
    assert "cached" not in skipped("run").to_json()
