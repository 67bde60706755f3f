"""`nixjail status ID` against a real `nixjail api` subprocess."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

from cli_harness import (
    EXAMPLES,
    NIXJAIL,
    SHELL_NIX,
    Api,
    ToyWorker,
    as_json,
    make_dir,
    nixjail,
    start_api,
    stop_api,
    submission_id_of,
)

from nixjail.models import StageResult, StageStatus
from nixjail.spool import Queue

HELLO = EXAMPLES / "hello"


def test_shows_what_submit_showed_at_the_end(api: Api) -> None:
    worker = ToyWorker(api.spool)
    worker.start()
    submitted = nixjail("submit", HELLO, "--api", api.url, "--stdin", HELLO / "stdin.txt")
    worker.finish()
    assert submitted.returncode == 0, submitted.stderr
    status = nixjail("status", submission_id_of(submitted.stderr), "--api", api.url)
    assert status.returncode == 0, status.stderr
    assert status.stdout == submitted.stdout == "Hello, nixjail!\n"
    # submit printed stages as they came before its end; the end is the same
    assert submitted.stderr.endswith(status.stderr)
    assert status.stderr.splitlines()[0].split()[:2] == ["stage", "status"]


def test_json_is_the_submission_as_the_api_returns_it(api: Api) -> None:
    worker = ToyWorker(api.spool)
    worker.start()
    submitted = nixjail("submit", HELLO, "--api", api.url, "--no-wait")
    ended = worker.finish()
    shown = nixjail("status", submitted.stdout.split()[0], "--api", api.url, "--json")
    assert shown.returncode == 0
    assert shown.stderr == ""
    with urllib.request.urlopen(f"{api.url}/v1/submissions/{ended.id}") as answer:
        assert as_json(shown.stdout) == json.load(answer)


def test_not_ended_shows_the_stages_so_far(api: Api) -> None:
    submission_id = nixjail("submit", HELLO, "--api", api.url, "--no-wait").stdout.split()[0]
    lease = api.spool.lease(Queue.run, "test-worker", wait_s=10)
    assert lease is not None
    api.spool.report_stage(lease, "compile", StageResult(status=StageStatus.ok, exit_code=0,
                                                         wall_time_ms=5))
    shown = nixjail("status", submission_id, "--api", api.url)
    assert shown.returncode == 75
    assert shown.stdout == ""
    lines = shown.stderr.splitlines()
    assert lines[2].split()[:3] == ["compile", "ok", "0"]
    assert lines[3].split() == ["run", "-"]
    assert lines[-2:] == [f"submission {submission_id}: running",
                          f"nixjail: submission {submission_id} has not ended"]


def test_wait_follows_it_to_its_end(api: Api, tmp_path: Path) -> None:
    directory = make_dir(tmp_path, {"shell.nix": SHELL_NIX, "run.sh": "exit 7\n"})
    submission_id = nixjail("submit", directory, "--api", api.url,
                            "--no-wait").stdout.split()[0]
    following = subprocess.Popen([str(NIXJAIL), "status", submission_id, "--api", api.url,
                                  "--wait", "60"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lease = api.spool.lease(Queue.run, "test-worker", wait_s=10)
    assert lease is not None
    api.spool.report_stage(lease, "compile", StageResult.skipped())
    # It shows the stage as it comes: proof that it is following, not done yet.
    assert following.stderr is not None
    assert following.stderr.readline() == "compile: skipped\n"
    api.spool.report_stage(lease, "run", StageResult(status=StageStatus.nonzero_exit,
                                                     exit_code=7, stdout="seven\n"))
    api.spool.complete(lease)
    stdout, stderr = following.communicate(timeout=30)
    assert following.returncode == 7, stderr
    assert stdout == "seven\n"
    assert stderr.splitlines()[-1] == f"submission {submission_id}: done"


def test_unknown_id_is_a_usage_error(api: Api) -> None:
    shown = nixjail("status", "nope", "--api", api.url)
    assert shown.returncode == 64
    assert shown.stderr.startswith("nixjail: ") and "(HTTP 404)" in shown.stderr
    assert shown.stderr.count("\n") == 1


def test_api_and_token_from_the_environment(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("submitter s3cret\n")
    api = start_api(tmp_path, api_extra=f'tokens_file = "{tokens}"')
    try:
        submitted = nixjail("submit", HELLO, "--api", api.url, "--no-wait", "--token", "s3cret")
        submission_id = submitted.stdout.split()[0]
        refused = nixjail("status", submission_id, env={"NIXJAIL_API": api.url})
        assert refused.returncode == 64
        assert "(HTTP 401)" in refused.stderr
        assert "give --token, --token-file or $NIXJAIL_TOKEN" in refused.stderr
        shown = nixjail("status", submission_id,
                        env={"NIXJAIL_API": api.url, "NIXJAIL_TOKEN": "s3cret"})
        assert shown.returncode == 75, shown.stderr  # queued: no worker here
    finally:
        stop_api(api)
