"""A runner on a worker host of its own: it leases over HTTP with a worker token."""

from __future__ import annotations

import pytest
from e2e_stack import Stack, containers_left

pytestmark = [pytest.mark.docker, pytest.mark.nix]


def test_remote_runner_runs_a_submission(remote_stack: Stack) -> None:
    submission = remote_stack.submit(files={"data.txt": "from the submitter\n"},
                                     run_sh="busybox cat data.txt; exit 4")
    assert submission["status"] == "done", submission
    run = submission["stages"]["run"]
    assert (run["status"], run["exit_code"], run["stdout"]) == (
        "nonzero_exit", 4, "from the submitter\n")
    assert submission["stages"]["dependencies"]["status"] == "ok"
    assert not containers_left(remote_stack.runner_name)


def test_the_worker_token_cannot_submit_and_no_token_cannot_lease(remote_stack: Stack) -> None:
    worker = Stack(base=remote_stack.base, url=remote_stack.url,
                   settings_file=remote_stack.settings_file, token="work-token")
    status, answer = worker.request("POST", "/v1/submissions",
                                    {"shell_nix": "x", "run_sh": "true"})
    assert status == 403, answer
    anonymous = Stack(base=remote_stack.base, url=remote_stack.url,
                      settings_file=remote_stack.settings_file)
    status, answer = anonymous.request("POST", "/v1/leases",
                                       {"queue": "run", "holder": "intruder", "wait_s": 0})
    assert status == 401, answer


def test_a_stage_of_the_largest_run_output_reaches_the_api(remote_stack: Stack) -> None:
    # 1 MiB of control characters on stdout and on stderr, the run stage's
    # maximum output: the worker's report of it is six times that in JSON,
    # above the API's usual body cap (api.max_body_bytes, 8 MiB).
    mib = 1024 * 1024
    flood = f"busybox head -c {mib} /dev/zero | busybox tr '\\000' '\\001'"
    submission = remote_stack.submit(run_sh=f"{flood}; {flood} >&2",
                                     limits={"run": {"output_kib": 1024}})
    assert submission["status"] == "done", submission["error"]
    run = submission["stages"]["run"]
    assert run["status"] == "ok", {k: v for k, v in run.items() if "std" not in k}
    assert run["stdout"] == run["stderr"] == "\x01" * mib
    assert not run["stdout_truncated"] and not run["stderr_truncated"]
