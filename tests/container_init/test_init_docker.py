"""Container init as PID 1 of the runner image, started the way the runner starts it."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
from init_helpers import REPO, limits, make_job, parse_lines

IMAGE = os.environ.get("NIXJAIL_TEST_IMAGE", "nixjail-runner:latest")
FIXTURE_NIXPKGS = REPO / "tests" / "fixtures" / "nixpkgs"


# scripts/bootstrap builds the image: a missing one fails these tests, never skips them.
pytestmark = [pytest.mark.docker]


def docker_run(job: dict, *, memory: str = "256m", pids: int = 128, extra: tuple = ()):
    argv = [
        "docker", "run", "-i", "--rm", "--network", "none", "--read-only",
        "--tmpfs", "/work:size=64m,exec", "--tmpfs", "/tmp",
        # Where the runner puts init's state and a private store (nixjail.docker).
        "--tmpfs", "/var/lib/nixjail-init:size=512m,exec", "-e",
        "NIXJAIL_STATE_DIR=/var/lib/nixjail-init",
        "--security-opt", "seccomp=unconfined", "--security-opt", "systempaths=unconfined",
        "--memory", memory, "--memory-swap", memory, "--pids-limit", str(pids),
        *extra, IMAGE,
    ]
    started = time.monotonic()
    proc = subprocess.run(argv, input=json.dumps(job).encode() + b"\n", capture_output=True,
                          timeout=60)
    events = parse_lines(proc.stdout)
    return proc.returncode, events, time.monotonic() - started, proc.stderr.decode()


def run_result(events: list[dict]) -> dict:
    return next(e["result"] for e in events if e.get("stage") == "run" and "result" in e)


def test_hello_world_as_pid1():
    code, events, _, stderr = docker_run(make_job("echo hi; id -u; echo $$"))
    assert code == 0, stderr
    result = run_result(events)
    assert result["status"] == "ok"
    assert result["stdout"].split("\n")[:2] == ["hi", "1000"]
    assert events[-1] == {"event": "finished"}


def test_memory_limit_from_the_container_cgroup():
    # The cgroup kills the hog; init sees the OOM counter move.
    job = make_job("tail /dev/zero", run_limits={"memory_mib": 64})
    code, events, _, stderr = docker_run(job, memory="96m")
    assert code == 0, stderr
    assert run_result(events)["status"] == "memory_limit"


def test_fork_bomb_in_container():
    job = make_job("f() { f | f & }; f; sleep 30", run_limits={"wall_time_s": 1, "processes": 40})
    code, events, elapsed, stderr = docker_run(job, pids=64)
    assert code == 0, stderr
    assert run_result(events)["status"] == "time_limit"
    assert elapsed < 5


def test_orphans_are_reaped():
    # The jail's processes die with its PID namespace; init as PID 1 reaps its own children.
    job = make_job("(sleep 0.1 &) ; echo started")
    code, events, _, stderr = docker_run(job)
    assert code == 0, stderr
    assert run_result(events)["stdout"] == "started\n"


def test_build_environment_with_fixture_nixpkgs():
    job = make_job(
        "echo $(type -P busybox)",
        environment={
            "kind": "build",
            "shell_nix": "{ pkgs ? import <nixpkgs> {} }:\n"
            "pkgs.mkShell { packages = [ pkgs.busybox ]; }",
            "nix_path": "nixpkgs=/opt/nixjail/nixpkgs",
        },
    )
    job["limits"]["dependencies"] = limits(wall_time_s=60, memory_mib=512, processes=128,
                                           file_size_kib=262144)
    code, events, _, stderr = docker_run(
        job, memory="768m", extra=("-v", f"{FIXTURE_NIXPKGS}:/opt/nixjail/nixpkgs:ro")
    )
    assert code == 0, stderr
    deps = next(e["result"] for e in events if e.get("stage") == "dependencies" and "result" in e)
    assert deps["status"] == "ok", deps
    assert run_result(events)["stdout"].startswith("/nix/store/")


def test_bad_job_in_container():
    argv = ["docker", "run", "-i", "--rm", "--network", "none", "--read-only",
            "--security-opt", "seccomp=unconfined", "--security-opt", "systempaths=unconfined",
            IMAGE]
    proc = subprocess.run(argv, input=b"{nope\n", capture_output=True, timeout=60)
    assert proc.returncode == 70
    assert [e["event"] for e in parse_lines(proc.stdout)] == ["init_failed", "finished"]
