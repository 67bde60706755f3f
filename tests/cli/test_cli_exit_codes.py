"""The exit-code scheme (docs/cli.md): each code from a submission that really
ends that way, through `submit` and `status` alike."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cli_harness import (
    NIXJAIL,
    SHELL_NIX,
    Api,
    ToyWorker,
    as_json,
    free_port,
    make_dir,
    nixjail,
    submission_id_of,
)
from e2e_stack import Stack

from nixjail.cli.exit_codes import ExitCode, for_submission
from nixjail.models import (
    StageResult,
    Stages,
    StageStatus,
    Submission,
    SubmissionRequest,
    SubmissionStatus,
)
from nixjail.spool import Queue

# The numbers docs/cli.md promises; a change here is a change of the interface.
DOCUMENTED = {"USAGE": 64, "COMPILE_FAILED": 65, "ENVIRONMENT_FAILED": 66, "TIME_LIMIT": 67,
              "MEMORY_LIMIT": 68, "OUTPUT_LIMIT": 69, "ERROR": 70, "CANCELLED": 71,
              "NOT_ACCEPTED": 72, "GAVE_UP": 75}


def test_the_documented_numbers() -> None:
    assert {code.name: code.value for code in ExitCode} == DOCUMENTED
    table = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
    for value in DOCUMENTED.values():
        assert f"| {value} |" in table, value


NOW = datetime(2025, 1, 1, tzinfo=UTC)
REQUEST = SubmissionRequest(shell_nix="{}: {}", run_sh="./main")


def ended(status: SubmissionStatus, **stages: StageResult) -> Submission:
    # Unvalidated: the decision reads only the status and the stages.
    return Submission.model_construct(id="a1", status=status, created_at=NOW, updated_at=NOW,
                                      request=REQUEST, stages=Stages(**stages), error=None)


OK = StageResult(status=StageStatus.ok, exit_code=0)
FAILED = StageResult(status=StageStatus.nonzero_exit, exit_code=1)


@pytest.mark.parametrize(("submission", "code", "without_program_code"), [
    (ended(SubmissionStatus.done, run=OK), 0, 0),
    (ended(SubmissionStatus.done, run=StageResult(status="nonzero_exit", exit_code=42)), 42, 0),
    (ended(SubmissionStatus.done, run=StageResult(status="nonzero_exit", exit_code=65)), 65, 0),
    (ended(SubmissionStatus.done, run=StageResult(status="signaled", signal=11)), 139, 0),
    (ended(SubmissionStatus.done, run=StageResult(status="time_limit", signal=9)), 67, 67),
    (ended(SubmissionStatus.done, run=StageResult(status="memory_limit")), 68, 68),
    (ended(SubmissionStatus.done, run=StageResult(status="output_limit", signal=9)), 69, 69),
    (ended(SubmissionStatus.failed, compile=FAILED, run=StageResult.skipped()), 65, 65),
    (ended(SubmissionStatus.failed, compile=StageResult(status="time_limit")), 65, 65),
    (ended(SubmissionStatus.failed, dependencies=FAILED, compile=StageResult.skipped()), 66, 66),
    (ended(SubmissionStatus.error), 70, 70),
    (ended(SubmissionStatus.done), 70, 70),  # done without a run result: broken
    (ended(SubmissionStatus.cancelled, run=StageResult.skipped()), 71, 71),
    (ended(SubmissionStatus.queued), 75, 75),
    (ended(SubmissionStatus.running, compile=OK), 75, 75),
])
def test_one_decision(submission: Submission, code: int, without_program_code: int) -> None:
    assert for_submission(submission) == code
    assert for_submission(submission, program_exit_code=False) == without_program_code


# -- through the commands, with a toy worker running the scripts for real ------------


def submit_and_status(api: Api, directory: Path, *flags: str) -> tuple[
        subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    """`submit DIR` as a toy worker runs it, then `status` of the same submission."""
    worker = ToyWorker(api.spool)
    worker.start()
    submitted = nixjail("submit", directory, "--api", api.url, *flags)
    worker.finish()
    status = nixjail("status", submission_id_of(submitted.stderr), "--api", api.url, *flags)
    return submitted, status


@pytest.mark.parametrize(("run_sh", "code"), [
    ("exit 0", 0), ("echo out; exit 3", 3), ("exit 64", 64), ("exit 255", 255),
    ("kill -9 $$", 128 + 9), ("kill -TERM $$", 128 + 15)])
def test_the_programs_own_code(api: Api, tmp_path: Path, run_sh: str, code: int) -> None:
    directory = make_dir(tmp_path, {"shell.nix": SHELL_NIX, "run.sh": run_sh + "\n"})
    submitted, status = submit_and_status(api, directory)
    assert submitted.returncode == status.returncode == code, submitted.stderr
    assert submitted.stderr.splitlines()[-1].endswith(": done")


def test_a_colliding_program_code_is_told_apart(api: Api, tmp_path: Path) -> None:
    # The program exits 65, nixjail's code for a failed compile.
    directory = make_dir(tmp_path, {"shell.nix": SHELL_NIX, "run.sh": "exit 65\n"})
    submitted, status = submit_and_status(api, directory, "--no-program-exit-code")
    assert submitted.returncode == status.returncode == 0, submitted.stderr
    shown = nixjail("status", submission_id_of(submitted.stderr), "--api", api.url, "--json")
    assert shown.returncode == 65
    record = as_json(shown.stdout)
    assert record["status"] == "done"
    assert (record["stages"]["run"]["status"], record["stages"]["run"]["exit_code"]) == (
        "nonzero_exit", 65)


def test_failed_compile_is_65(api: Api, tmp_path: Path) -> None:
    directory = make_dir(tmp_path, {"shell.nix": SHELL_NIX, "compile.sh": "exit 1\n",
                                    "run.sh": "echo never\n"})
    submitted, status = submit_and_status(api, directory)
    assert submitted.returncode == status.returncode == 65, submitted.stderr
    assert submitted.stderr.splitlines()[-1].endswith(": failed")


def waiting_submit(api: Api, directory: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([str(NIXJAIL), "submit", str(directory), "--api", api.url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_system_error_is_70(api: Api, tmp_path: Path) -> None:
    directory = make_dir(tmp_path, {"shell.nix": SHELL_NIX, "run.sh": "true\n"})
    waiting = waiting_submit(api, directory)
    # Play a worker whose container init broke.
    lease = api.spool.lease(Queue.run, "test-worker", wait_s=20)
    assert lease is not None
    api.spool.complete(lease, error="container init exited with code 3")
    _, stderr = waiting.communicate(timeout=30)
    assert waiting.returncode == 70, stderr
    assert stderr.splitlines()[-1] == (f"submission {lease.submission_id}: error "
                                       "(container init exited with code 3)")
    assert nixjail("status", lease.submission_id, "--api", api.url).returncode == 70


def test_cancelled_is_71(api: Api, tmp_path: Path) -> None:
    directory = make_dir(tmp_path, {"shell.nix": SHELL_NIX, "run.sh": "true\n"})
    waiting = waiting_submit(api, directory)
    lease = api.spool.lease(Queue.run, "test-worker", wait_s=20)
    assert lease is not None
    cancelled = nixjail("cancel", lease.submission_id, "--api", api.url)
    assert cancelled.returncode == 0, cancelled.stderr
    _, stderr = waiting.communicate(timeout=30)
    assert waiting.returncode == 71, stderr
    assert stderr.splitlines()[-1] == f"submission {lease.submission_id}: cancelled"
    assert nixjail("status", lease.submission_id, "--api", api.url).returncode == 71


def test_giving_up_is_75(api: Api, tmp_path: Path) -> None:
    directory = make_dir(tmp_path, {"shell.nix": SHELL_NIX, "run.sh": "true\n"})
    # No worker: the submission stays queued.
    timed_out = nixjail("submit", directory, "--api", api.url, "--timeout", "0.3")
    assert timed_out.returncode == 75
    submission_id = timed_out.stderr.split("submission ")[1].split()[0]
    assert api.spool.get(submission_id).status is SubmissionStatus.queued
    assert nixjail("status", submission_id, "--api", api.url).returncode == 75
    assert nixjail("status", submission_id, "--api", api.url, "--wait", "0.3").returncode == 75
    unreachable = f"http://127.0.0.1:{free_port()}"
    for argv in (["submit", directory], ["status", submission_id], ["cancel", submission_id],
                 ["list"]):
        done = nixjail(*argv, "--api", unreachable)
        assert done.returncode == 75, argv
        assert done.stderr.startswith(f"nixjail: cannot reach the nixjail API at {unreachable}")


def test_usage_error_is_64(api: Api, tmp_path: Path) -> None:
    directory = make_dir(tmp_path, {"shell.nix": SHELL_NIX})  # no run.sh
    assert nixjail("submit", directory, "--api", api.url).returncode == 64
    assert nixjail("submit", directory, "--wall-time", "x", "--api", api.url).returncode == 64
    unknown = nixjail("status", "0000000000000000deadbeef00", "--api", api.url)
    assert unknown.returncode == 64
    assert unknown.stderr.count("\n") == 1 and "(HTTP 404)" in unknown.stderr


# -- the codes only a real run gives: limits enforced, an environment that does not build --


@pytest.mark.docker
@pytest.mark.nix
@pytest.mark.parametrize(("files", "flags", "code", "run_status"), [
    ({"run.sh": "busybox sleep 30\n"}, ["--wall-time", "1"], 67, "time_limit"),
    ({"run.sh": "a=x; while :; do a=$a$a; done\n"}, ["--memory", "64", "--wall-time", "20"],
     68, "memory_limit"),
    ({"run.sh": "busybox yes nixjail\n"}, ["--output", "16", "--wall-time", "10"],
     69, "output_limit"),
    ({"run.sh": "true\n", "shell.nix": "{ pkgs ? import <nixpkgs> {} }: "
      "pkgs.mkShell { packages = [ pkgs.noSuchPackage ]; }\n"}, [], 66, None),
], ids=["time_limit", "memory_limit", "output_limit", "environment_failed"])
def test_real_runs(stack: Stack, tmp_path: Path, files: dict[str, str], flags: list[str],
                   code: int, run_status: str | None) -> None:
    directory = make_dir(tmp_path, {"shell.nix": SHELL_NIX, **files})
    submitted = nixjail("submit", directory, "--api", stack.url, *flags, timeout=180)
    assert submitted.returncode == code, submitted.stderr[-3000:]
    submission_id = submission_id_of(submitted.stderr)
    status = nixjail("status", submission_id, "--api", stack.url, "--json")
    assert status.returncode == code
    record = as_json(status.stdout)
    if run_status is None:
        assert record["status"] == "failed"
        assert record["stages"]["dependencies"]["status"] not in ("ok", "skipped")
    else:
        assert record["status"] == "done"
        assert record["stages"]["run"]["status"] == run_status
