"""`nixjail cancel ID` against a real `nixjail api` subprocess."""

from __future__ import annotations

from cli_harness import EXAMPLES, Api, ToyWorker, as_json, nixjail

from nixjail.models import SubmissionStatus
from nixjail.spool import Queue

HELLO = EXAMPLES / "hello"


def queued(api: Api) -> str:
    done = nixjail("submit", HELLO, "--api", api.url, "--no-wait")
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[0]


def test_a_queued_submission_never_runs(api: Api) -> None:
    submission_id = queued(api)
    done = nixjail("cancel", submission_id, "--api", api.url)
    assert (done.returncode, done.stdout, done.stderr) == (
        0, f"{submission_id} cancelled (was queued)\n", "")
    assert api.spool.get(submission_id).status is SubmissionStatus.cancelled
    assert api.spool.queued(Queue.run) == []


def test_a_running_submission_and_a_second_cancel(api: Api) -> None:
    submission_id = queued(api)
    lease = api.spool.lease(Queue.run, "test-worker", wait_s=10)
    assert lease is not None and lease.submission_id == submission_id
    done = nixjail("cancel", submission_id, "--api", api.url)
    assert (done.returncode, done.stdout) == (0, f"{submission_id} cancelled (was running)\n")
    again = nixjail("cancel", submission_id, "--api", api.url)
    assert (again.returncode, again.stdout) == (0, f"{submission_id} cancelled (already)\n")


def test_one_that_ended_is_left_alone(api: Api) -> None:
    worker = ToyWorker(api.spool)
    worker.start()
    submission_id = queued(api)
    worker.finish()
    done = nixjail("cancel", submission_id, "--api", api.url)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == (f"nixjail: submission {submission_id} had already ended as done; "
                           "nothing to cancel\n")
    assert api.spool.get(submission_id).status is SubmissionStatus.done
    shown = nixjail("cancel", submission_id, "--api", api.url, "--json")
    assert shown.returncode == 1
    assert as_json(shown.stdout)["status"] == "done"


def test_json_and_unknown_id(api: Api) -> None:
    submission_id = queued(api)
    done = nixjail("cancel", submission_id, "--api", api.url, "--json")
    assert done.returncode == 0
    assert as_json(done.stdout)["status"] == "cancelled"
    unknown = nixjail("cancel", "nope", "--api", api.url)
    assert unknown.returncode == 64
    assert "(HTTP 404)" in unknown.stderr and unknown.stderr.count("\n") == 1
