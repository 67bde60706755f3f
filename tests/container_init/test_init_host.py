"""Container init on this host: each job runs the real nsjail, nothing is mocked."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from init_helpers import REPO, make_job, read_event, require_jail


@pytest.fixture(autouse=True)
def _jail() -> None:
    require_jail()


def test_hello_world(run_init):
    run = run_init(make_job("echo hello, world"))
    assert run.returncode == 0, run.stderr
    assert run.kinds == ["stage_finished", "stage_started", "stage_finished", "finished"]
    assert run.result("compile")["status"] == "skipped"
    result = run.result("run")
    assert result["status"] == "ok"
    assert result["exit_code"] == 0 and result["signal"] is None
    assert result["stdout"] == "hello, world\n"
    assert result["stderr"] == ""
    assert result["wall_time_ms"] < 1000
    # The stage's own peak or none (no cgroup here): never container init's own,
    # which the kernel hands every child as its starting peak.
    assert result["memory_kib"] < 8 * 1024, result
    assert set(result) == {
        "status", "exit_code", "signal", "stdout", "stderr", "stdout_truncated",
        "stderr_truncated", "stdout_binary", "stderr_binary", "wall_time_ms", "cpu_time_ms",
        "memory_kib", "stdout_encoding", "stderr_encoding", "started_at", "finished_at",
    }


def test_files_and_stdin_reach_the_program(run_init):
    job = make_job(
        "bash main.sh < /dev/stdin; od -An -tx1 data.bin",
        files={
            "main.sh": {"content": 'read -r line; echo "got: $line"', "encoding": "utf-8"},
            "data.bin": {"content": "AAEC", "encoding": "base64"},
        },
        stdin="the input\n",
    )
    result = run_init(job).result("run")
    assert result["status"] == "ok", result
    assert result["stdout"] == "got: the input\n 00 01 02\n"


def test_nonzero_exit(run_init):
    result = run_init(make_job("echo out; echo err >&2; exit 3")).result("run")
    assert result["status"] == "nonzero_exit"
    assert result["exit_code"] == 3 and result["signal"] is None
    assert (result["stdout"], result["stderr"]) == ("out\n", "err\n")


def test_killed_by_signal(run_init):
    result = run_init(make_job("kill -SEGV $$")).result("run")
    assert result["status"] == "signaled"
    assert result["signal"] == 11 and result["exit_code"] is None
    assert result["stderr"] == ""


def test_wall_time_limit(run_init):
    run = run_init(make_job("sleep 10", run_limits={"wall_time_s": 0.5}))
    result = run.result("run")
    assert result["status"] == "time_limit"
    assert 450 <= result["wall_time_ms"] < 800
    assert run.elapsed < 2.0
    assert run.returncode == 0


def test_cpu_time_limit(run_init):
    run = run_init(make_job("while :; do :; done", run_limits={"cpu_time_s": 0.5}))
    result = run.result("run")
    assert result["status"] == "time_limit"
    assert result["cpu_time_ms"] >= 450
    assert run.elapsed < 3.0


def test_a_stage_larger_than_init_reports_its_own_peak(run_init):
    # tail holds the one 64 MiB line whole.
    result = run_init(make_job("head -c 67108864 /dev/zero | tail >/dev/null",
                               run_limits={"memory_mib": 256})).result("run")
    assert result["status"] == "ok", result
    assert 64 * 1024 <= result["memory_kib"] < 200 * 1024, result


def test_memory_hog(run_init):
    # tail keeps the endless "line" in memory.
    result = run_init(make_job("tail /dev/zero", run_limits={"memory_mib": 32})).result("run")
    assert result["status"] == "memory_limit", result


def test_fork_bomb_is_bounded(run_init):
    # The bomb cannot pass the process limit and ends at the wall time; nothing survives.
    marker = f"{uuid.uuid4().int % 10**6}.25"
    job = make_job(
        f"sleep {marker} & f() {{ f | f & }}; f; sleep 30",
        run_limits={"wall_time_s": 1, "processes": 20},
    )
    run = run_init(job)
    result = run.result("run")
    assert result["status"] == "time_limit"
    assert "Resource temporarily unavailable" in result["stderr"]
    assert run.elapsed < 3.0
    left = subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True)
    assert left.stdout == b""


def test_output_flood(run_init):
    run = run_init(make_job("yes", run_limits={"output_kib": 16}))
    result = run.result("run")
    assert result["status"] == "output_limit"
    assert result["stdout_truncated"] and not result["stderr_truncated"]
    assert result["stdout"] == "y\n" * 8192
    assert run.elapsed < 2.0


def test_stderr_flood(run_init):
    result = run_init(make_job("yes >&2", run_limits={"output_kib": 4})).result("run")
    assert result["status"] == "output_limit"
    assert result["stderr_truncated"] and len(result["stderr"]) == 4096


def test_no_network(run_init):
    """A jail sees only its own loopback: the host's 127.0.0.1 listener is unreachable."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        script = f"echo x > /dev/tcp/127.0.0.1/{port} && echo CONNECTED; cat /proc/net/dev"
        result = run_init(make_job(script)).result("run")
        with pytest.raises(BlockingIOError):
            listener.accept()
    assert "CONNECTED" not in result["stdout"]
    interfaces = [line.split(":")[0].strip() for line in result["stdout"].splitlines()[2:]]
    assert interfaces == ["lo"]


def test_host_files_are_invisible(run_init, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    script = (
        f"for f in /etc/shadow /root {REPO}/pyproject.toml {secret} /proc/1/root/etc/shadow; do"
        ' if cat "$f" >/dev/null 2>&1 || ls "$f" >/dev/null 2>&1; then echo "READ $f"; fi; done;'
        " ls /"
    )
    result = run_init(make_job(script)).result("run")
    assert "READ" not in result["stdout"], result["stdout"]
    top = set(result["stdout"].split())
    assert top <= {"bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "nix", "nixjail",
                   "proc", "tmp", "usr", "work"}


def test_writes_only_in_work_and_tmp(run_init):
    script = (
        "for d in / /usr /etc /nixjail /dev /proc /bin; do"
        ' touch "$d/nixjail-probe" 2>/dev/null && echo "WROTE $d"; done;'
        " touch /work/ok /tmp/ok && echo fine; id -u"
    )
    result = run_init(make_job(script)).result("run")
    assert result["stdout"] == "fine\n1000\n", result


def test_file_size_limit(run_init):
    job = make_job("head -c 300000 /dev/zero > big", run_limits={"file_size_kib": 100})
    result = run_init(job).result("run")
    # The kernel stops the writer with SIGXFSZ.
    assert result["status"] == "signaled" and result["signal"] == signal.SIGXFSZ


def test_seccomp_denies_namespaces(run_init):
    result = run_init(make_job("unshare -U true && echo ESCAPED; echo done")).result("run")
    assert result["stdout"] == "done\n"
    assert "Operation not permitted" in result["stderr"]


def test_compile_then_run(run_init):
    job = make_job(
        "./prog",
        files={"prog.sh": "echo compiled-run"},
        compile_sh="cp prog.sh prog && chmod +x prog && echo built",
    )
    run = run_init(job)
    assert run.kinds == ["stage_started", "stage_finished"] * 2 + ["finished"]
    assert run.result("compile")["stdout"] == "built\n"
    assert run.result("run")["stdout"] == "compiled-run\n"


def test_compile_failure_skips_run(run_init):
    job = make_job(
        "echo never",
        compile_sh="echo 'main.c:3:5: error: expected ; before }' >&2; exit 1",
    )
    run = run_init(job)
    assert run.returncode == 0
    compile_result = run.result("compile")
    assert compile_result["status"] == "nonzero_exit"
    assert "main.c:3:5: error" in compile_result["stderr"]
    run_result = run.result("run")
    assert run_result["status"] == "skipped" and run_result["stdout"] == ""


def test_prebuilt_environment_script_text(run_init):
    job = make_job(
        "greet",
        environment={"kind": "prebuilt", "env_script": 'greet() { echo "hi from $WHO"; }\n'
                     "export WHO=env\n"},
    )
    assert run_init(job).result("run")["stdout"] == "hi from env\n"


@pytest.mark.parametrize(
    "payload",
    [b"not json\n", b"[]\n", json.dumps({"run_sh": "true"}).encode() + b"\n", b""],
)
def test_bad_job(run_init, payload):
    run = run_init(payload)
    assert run.returncode == 70
    assert run.kinds == ["init_failed", "finished"]
    assert run.events[0]["error"]


def test_bad_limits_are_rejected(run_init):
    job = make_job("true", run_limits={"memory_mib": -1})
    run = run_init(job)
    assert run.kinds == ["init_failed", "finished"]
    assert "memory_mib" in run.events[0]["error"]


def test_missing_nsjail(run_init, init_env):
    init_env["NIXJAIL_NSJAIL"] = "/nonexistent/nsjail"
    run = run_init(make_job("true"))
    assert run.returncode == 70
    assert "nsjail" in run.events[0]["error"]


def test_handshake(start_init):
    proc = start_init()
    proc.stdin.write(json.dumps(make_job("echo run", compile_sh="echo c", handshake=True))
                     .encode() + b"\n")
    proc.stdin.flush()
    for stage in ("compile", "run"):
        ready = read_event(proc)
        in_use = ready.pop("memory_in_use_kib")
        assert in_use is None or in_use > 0
        assert ready == {"event": "stage_ready", "stage": stage}
        proc.stdin.write(b'{"go": true}\n')
        proc.stdin.flush()
        assert read_event(proc) == {"event": "stage_started", "stage": stage}
        assert read_event(proc)["result"]["status"] == "ok"
    assert read_event(proc) == {"event": "finished"}
    assert proc.wait(timeout=5) == 0


def test_handshake_eof_means_runner_gone(start_init):
    proc = start_init()
    proc.stdin.write(json.dumps(make_job("echo run", handshake=True)).encode() + b"\n")
    proc.stdin.flush()
    # No handshake for a stage that is skipped anyway.
    assert read_event(proc)["result"]["status"] == "skipped"
    ready = read_event(proc)
    assert (ready["event"], ready["stage"]) == ("stage_ready", "run")
    proc.stdin.close()
    event = read_event(proc)
    assert event["event"] == "init_failed" and "stdin closed" in event["error"]
    assert read_event(proc) == {"event": "finished"}
    assert proc.wait(timeout=5) == 70


def test_deadline(run_init):
    run = run_init(make_job("sleep 10", deadline_s=0.5))
    assert run.result("run")["status"] == "error"
    assert run.kinds[-2:] == ["init_failed", "finished"]
    assert "deadline" in run.events[-2]["error"]
    assert run.returncode == 70
    assert run.elapsed < 2.5


def test_sigterm_stops_the_stage(start_init):
    proc = start_init()
    marker = f"{uuid.uuid4().int % 10**6}.5"
    proc.stdin.write(json.dumps(make_job(f"sleep {marker}")).encode() + b"\n")
    proc.stdin.flush()
    assert read_event(proc)["result"]["status"] == "skipped"
    assert read_event(proc) == {"event": "stage_started", "stage": "run"}
    started = time.monotonic()
    while subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True).returncode:
        assert time.monotonic() - started < 5
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGTERM)
    events = [json.loads(line) for line in proc.stdout.read().splitlines()]
    assert [e["event"] for e in events] == ["stage_finished", "init_failed", "finished"]
    assert events[0]["result"]["status"] == "error"
    assert "signal 15" in events[1]["error"]
    assert proc.wait(timeout=5) == 70
    assert time.monotonic() - started < 2


def test_private_dirs_are_cleaned_up(run_init, init_env):
    run_init(make_job("true"))
    assert os.listdir(init_env["NIXJAIL_STATE_DIR"]) == []


def test_work_dir_is_owned_by_the_jail_user(run_init, init_env):
    run_init(make_job("echo data > out.txt", files={"in/a.txt": "x"}))
    work = Path(init_env["NIXJAIL_WORK_DIR"])
    assert (work / "out.txt").read_text() == "data\n"
    assert (work / "in" / "a.txt").stat().st_uid == 1000
