"""`nixjail expire-leases` as the systemd timer runs it: a subprocess with a settings file."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from cli_harness import nixjail, write_settings

from nixjail.models import SubmissionRequest, SubmissionStatus
from nixjail.settings import load_settings
from nixjail.spool import Queue, Spool

REQUEST = SubmissionRequest(shell_nix="{}: {}", run_sh="true")


def expired_lease(settings_path: Path) -> tuple[Spool, str]:
    spool = Spool.from_settings(load_settings(settings_path))
    submission = spool.create(REQUEST)
    lease = spool.lease(Queue.run, "gone-worker")
    assert lease is not None and lease.submission_id == submission.id
    time.sleep(0.3)  # past lease_s
    return spool, submission.id


def test_requeues_an_expired_lease(tmp_path: Path) -> None:
    settings = write_settings(tmp_path, extra="lease_s = 0.2")
    spool, submission_id = expired_lease(settings)
    done = nixjail("expire-leases", "--settings", settings)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"requeued {submission_id} (queued, attempt 1 done)\n"
    submission = spool.get(submission_id)
    assert submission.status is SubmissionStatus.queued
    assert submission.attempts == 1
    assert spool.queued(Queue.run) == [submission_id]
    # a second pass finds nothing more to do, and says nothing
    again = nixjail("expire-leases", "--settings", settings)
    assert (again.returncode, again.stdout) == (0, "")


def test_ends_as_error_after_max_attempts(tmp_path: Path) -> None:
    settings = write_settings(tmp_path, extra="lease_s = 0.2\nmax_attempts = 1")
    spool, submission_id = expired_lease(settings)
    done = nixjail("expire-leases", env={"NIXJAIL_SETTINGS": str(settings)})
    assert done.returncode == 0, done.stderr
    assert done.stdout == (f"ended {submission_id} as error: gave up after 1 attempts: "
                           "the lease held by gone-worker expired\n")
    assert spool.get(submission_id).status is SubmissionStatus.error
    assert spool.queued(Queue.run) == []


def test_live_lease_is_left_alone(tmp_path: Path) -> None:
    settings = write_settings(tmp_path)
    spool = Spool.from_settings(load_settings(settings))
    submission = spool.create(REQUEST)
    assert spool.lease(Queue.run, "busy-worker") is not None
    done = nixjail("expire-leases", "--settings", settings)
    assert (done.returncode, done.stdout) == (0, "")
    assert spool.get(submission.id).status is SubmissionStatus.running


def test_unreadable_settings_is_one_line(tmp_path: Path) -> None:
    done = nixjail("expire-leases", "--settings", tmp_path / "missing.toml")
    assert done.returncode == 2
    assert done.stderr == (f"nixjail: settings: cannot read {tmp_path / 'missing.toml'}: "
                           "No such file or directory\n")


def test_requeueing_kicks_the_runner(tmp_path: Path) -> None:
    settings = write_settings(tmp_path, extra="lease_s = 0.2")
    spool, submission_id = expired_lease(settings)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as runner_socket:
        runner_socket.bind(str(tmp_path / "run" / "runner.sock"))
        runner_socket.listen(4)
        runner_socket.settimeout(10)
        done = nixjail("expire-leases", "--settings", settings)
        assert done.returncode == 0, done.stderr
        connection, _ = runner_socket.accept()  # the kick; times out without one
        connection.close()
    assert spool.queued(Queue.run) == [submission_id]


def test_waiting_dependencies_jobs_go_to_the_workers(tmp_path: Path) -> None:
    settings = write_settings(
        tmp_path, extra="[cache_builder]\nenabled = true\nfallback_after_s = 0.2")
    spool = Spool.from_settings(load_settings(settings))
    submission = spool.create(REQUEST)
    assert spool.queued(Queue.dependencies) == [submission.id]
    time.sleep(0.3)
    done = nixjail("expire-leases", "--settings", settings)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"sent {submission.id} to the workers")
    assert spool.queued(Queue.run) == [submission.id]
