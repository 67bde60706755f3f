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
                          timeout=job["deadline_s"] + 30)
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


def test_a_stage_is_held_to_its_own_memory_in_a_larger_container():
    # The runner leaves the container room above the stage's limit (for tmpfs files
    # and a private store); init holds the stage's processes to memory_mib itself.
    # Without that, the hog would grow to the container's 512 MiB before the OOM kill.
    job = make_job("tail /dev/zero", run_limits={"memory_mib": 32})
    code, events, _, stderr = docker_run(job, memory="512m")
    assert code == 0, stderr
    result = run_result(events)
    assert result["status"] == "memory_limit", result
    assert 32 * 1024 <= result["memory_kib"] < 160 * 1024, result


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


def test_cpu_of_processes_that_outlive_the_stage_shell_is_counted_and_limited():
    # Issue 9, item 5: three workers in the background and a shell that leaves at once
    # burned 2.4 s against cpu_time_s 1 and the stage read `ok`, 104 ms.
    job = make_job("for i in 1 2 3; do (while :; do :; done) & done; sleep 8; exit 0",
                   run_limits={"cpu_time_s": 1, "wall_time_s": 10})
    code, events, _, stderr = docker_run(job)
    assert code == 0, stderr
    result = run_result(events)
    assert result["status"] == "time_limit", result
    # Killed once the whole tree reached the limit, not at the end of the wall time.
    assert 1000 <= result["cpu_time_ms"] < 1500, result
    assert result["wall_time_ms"] < 8000, result


def test_cpu_of_background_workers_when_the_shell_ends_first():
    # Under the limit: the figure is still every process's, not the waited tree's. The
    # shell prints what its workers had used (clock ticks) when it leaves them behind.
    job = make_job(
        "pids=; for i in 1 2; do (while :; do :; done) & pids+=\" $!\"; done; sleep 0.3; "
        "t=0; for p in $pids; do read -ra f < /proc/$p/stat; t=$((t + f[13] + f[14])); "
        "done; echo $t; exit 0",
        run_limits={"cpu_time_s": 5, "wall_time_s": 10})
    code, events, _, stderr = docker_run(job)
    assert code == 0, stderr
    result = run_result(events)
    assert result["status"] == "ok", result
    workers_ms = int(result["stdout"]) * 1000 // os.sysconf("SC_CLK_TCK")
    assert workers_ms > 0, result
    assert result["cpu_time_ms"] >= workers_ms, result


def test_a_cpu_loop_ends_time_limit_on_a_loaded_machine():
    # The CI failure of issue 9: `while :; do :; done` at cpu_time_s 1 ended `signaled`
    # when RLIMIT_CPU's tick-sampled SIGKILL came before the exact figure reached the
    # limit. Two busy loops per core outside the container load the machine the same way.
    hogs = [subprocess.Popen(["python3", "-c", "while True: pass"])
            for _ in range(2 * len(os.sched_getaffinity(0)))]
    try:
        # The wall limit is far away: on a machine loaded beyond the hogs (the whole suite
        # runs beside this) a second of CPU can take many seconds, and a kill at the wall
        # limit would say nothing about the CPU rule.
        job = make_job("while :; do :; done", deadline_s=90,
                       run_limits={"cpu_time_s": 1, "wall_time_s": 80})
        for _ in range(3):
            code, events, _, stderr = docker_run(job)
            assert code == 0, stderr
            result = run_result(events)
            figures = {key: result[key] for key in ("status", "signal", "cpu_time_ms",
                                                    "wall_time_ms")}
            assert result["status"] == "time_limit", figures
            assert result["cpu_time_ms"] >= 1000, figures
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


PROC_SECRETS = ("/proc/cmdline", "/proc/config.gz", "/proc/sys/kernel/random/boot_id",
                "/proc/kallsyms", "/proc/keys", "/proc/sched_debug", "/proc/timer_list")


def test_proc_shows_the_jail_nothing_of_the_host():
    reads = "; ".join(f'echo "{path} $(cat {path} 2>/dev/null | wc -c)"' for path in PROC_SECRETS)
    job = make_job(f"{reads}; echo $(cat /proc/self/oom_score_adj)")
    code, events, _, stderr = docker_run(job)
    assert code == 0, stderr
    result = run_result(events)
    assert result["status"] == "ok", result
    lines = result["stdout"].splitlines()
    sizes = dict(line.split() for line in lines[: len(PROC_SECRETS)])
    assert sizes == dict.fromkeys(PROC_SECRETS, "0"), lines
    assert lines[-1] == "1000"  # every stage process is the kernel's first OOM victim


def test_no_mount_of_the_jail_names_the_hosts_docker_overlay():
    # A bind from the image's overlay shows its lowerdir/upperdir (host paths) in mountinfo.
    # The runner's kind for compile and run; the jail has bash builtins only.
    count = ('n=0; while IFS= read -r line; do case $line in *lowerdir=*|*/var/lib/docker*) '
             'n=$((n + 1));; esac; done < {}; echo -n "$n "')
    job = make_job(count.format("/proc/self/mountinfo") + "; " + count.format("/proc/self/mounts")
                   + '; [ -e /usr/bin/python3 ] || [ -e /lib ] || echo -n "no image tools"',
                   compile_sh=count.format("/proc/self/mountinfo"),
                   environment={"kind": "prebuilt", "env_script": "export FROM_ENV=1\n"})
    code, events, _, stderr = docker_run(job)
    assert code == 0, stderr
    compiled = next(e["result"] for e in events if e.get("stage") == "compile" and "result" in e)
    assert compiled["stdout"] == "0 ", compiled
    result = run_result(events)
    assert result["stdout"] == "0 0 no image tools", result


def test_binary_output_is_marked():
    job = make_job(r"printf 'text\n'; printf 'esc \033[2J nul \000' >&2")
    code, events, _, stderr = docker_run(job)
    assert code == 0, stderr
    result = run_result(events)
    assert result["stdout_binary"] is False and result["stderr_binary"] is True, result
