"""The routines both the timers and `nixjail serve` run: expiry and retention."""

from __future__ import annotations

import os
import time
from pathlib import Path

from nixjail.expiry import delete_old_submissions, expire_pass
from nixjail.models import SubmissionRequest, SubmissionStatus
from nixjail.settings import Settings
from nixjail.spool import Queue, Spool

REQUEST = SubmissionRequest(shell_nix="{}: {}", run_sh="true", cache=False)


def settings_in(tmp_path: Path, **changes: object) -> Settings:
    settings = Settings(spool_dir=tmp_path / "spool", run_dir=tmp_path / "run", lease_s=0.2)
    settings.runner.kick_socket = tmp_path / "run" / "runner.sock"
    return settings.model_copy(update=changes)


def test_retention_deletes_only_submissions_that_ended_long_enough_ago(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    settings.gc.submission_max_age_s = 3600
    spool = Spool.from_settings(settings)
    old, recent, running = (spool.create(REQUEST) for _ in range(3))
    spool.cancel(old.id)
    spool.cancel(recent.id)
    assert spool.lease(Queue.run, "w") is not None  # takes `running`, the one still queued
    # `old` ended a year ago, as its record says.
    record = spool.get(old.id)
    aged = record.model_copy(update={"finished_at": record.finished_at.replace(
        year=record.finished_at.year - 1)})
    (settings.spool_dir / "submissions" / f"{old.id}.json").write_text(aged.model_dump_json())
    assert delete_old_submissions(settings) == [old.id]
    assert {s.id for s in spool.list()[0]} == {recent.id, running.id}
    settings.gc.submission_max_age_s = None
    assert delete_old_submissions(settings) == []


def test_retention_on_a_host_without_a_spool_does_nothing(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    assert delete_old_submissions(settings) == []
    assert not (settings.spool_dir / "submissions").exists()


def test_one_pass_says_what_it_did(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    spool = Spool.from_settings(settings)
    submission = spool.create(REQUEST)
    assert spool.lease(Queue.run, f"w/{os.getpid()}") is not None
    time.sleep(0.3)  # past lease_s: the lease is expired, which is what this pass acts on
    assert expire_pass(settings) == [f"requeued {submission.id} (queued, attempt 1 done)"]
    assert spool.get(submission.id).status is SubmissionStatus.queued
    assert expire_pass(settings) == []
