"""The leasing loop, lease keeper and lease sources the runner and the cache
builder share, against a real spool."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from nixjail.client import Client, LeasedJob, SpoolLeaseSource
from nixjail.leasing import LeaseKeeper, lease_source, serve_jobs
from nixjail.models import StageResult, SubmissionRequest, SubmissionStatus
from nixjail.settings import Settings
from nixjail.spool import Queue, Spool

REQUEST = SubmissionRequest(shell_nix="{}: {}", run_sh="true")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    settings = Settings(spool_dir=tmp_path / "spool", run_dir=tmp_path / "run", lease_s=0.6)
    settings.runner.kick_socket = tmp_path / "run" / "runner.sock"
    settings.cache_builder.enabled = True
    return settings


def test_the_spool_source_kicks_the_runner_when_a_run_job_is_queued(
        settings: Settings) -> None:
    source, spool = lease_source(settings, None, None)
    assert isinstance(source, SpoolLeaseSource) and spool is not None
    submission = spool.create(REQUEST)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as runner:
        runner.bind(str(settings.runner.kick_socket))
        runner.listen(4)
        runner.settimeout(5)
        leased = source.lease(Queue.dependencies, "builder/1")
        assert leased is not None and leased.submission.id == submission.id
        assert leased.limits == settings.resolve_limits(REQUEST)
        source.report_stage(leased.lease, "dependencies", StageResult(status="ok"))
        assert source.complete(leased.lease).status is SubmissionStatus.queued
        connection, _ = runner.accept()  # the kick; times out without one
        connection.close()
    assert spool.queued(Queue.run) == [submission.id]


def test_an_api_url_means_leasing_over_http(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "token").write_text("secret\n")
    source, spool = lease_source(settings, "http://127.0.0.1:9", tmp_path / "token")
    assert isinstance(source, Client) and spool is None
    assert (source.base_url, source.token) == ("http://127.0.0.1:9", "secret")


def test_serve_jobs_runs_each_job_once_and_exits_when_idle(settings: Settings) -> None:
    source, spool = lease_source(settings, None, None)
    ids = {spool.create(REQUEST.model_copy(update={"cache": False})).id for _ in range(5)}
    seen: list[str] = []

    def process(leased: LeasedJob) -> None:
        seen.append(leased.submission.id)
        source.report_stage(leased.lease, "run", StageResult(status="ok", exit_code=0))
        source.complete(leased.lease)

    started = time.monotonic()
    serve_jobs(source, Queue.run, "runner/1", slots=2, idle_exit_s=0.3, process=process,
               stopping=threading.Event())
    assert sorted(seen) == sorted(ids)
    assert all(spool.get(i).status is SubmissionStatus.done for i in ids)
    assert time.monotonic() - started < 5


def test_a_kick_wakes_the_loop_at_once(settings: Settings) -> None:
    source, spool = lease_source(settings, None, None)
    kicked, stopping, done = threading.Event(), threading.Event(), threading.Event()
    taken_at: list[float] = []

    def process(leased: LeasedJob) -> None:
        taken_at.append(time.monotonic())
        source.complete(leased.lease, error="not run in this test")
        stopping.set()
        done.set()

    loop = threading.Thread(target=serve_jobs, args=(source, Queue.run, "runner/1"),
                            kwargs={"slots": 1, "idle_exit_s": None, "process": process,
                                    "stopping": stopping, "kicked": kicked})
    loop.start()
    time.sleep(0.2)  # the loop found nothing and sleeps until a kick
    spool.create(REQUEST.model_copy(update={"cache": False}))
    queued_at = time.monotonic()
    kicked.set()
    assert done.wait(5)
    loop.join(5)
    assert taken_at[0] - queued_at < 0.5  # without the kick: up to a whole poll


def test_the_keeper_renews_and_reports_a_lost_lease(settings: Settings) -> None:
    spool = Spool.from_settings(settings)
    source = SpoolLeaseSource(spool, settings)
    submission = spool.create(REQUEST.model_copy(update={"cache": False}))
    leased = source.lease(Queue.run, "runner/1")
    lost = threading.Event()
    keeper = LeaseKeeper(source, leased.lease, interval_s=0.1, on_lost=lost.set)
    keeper.start()
    time.sleep(0.9)  # past lease_s: only renewal keeps it
    assert spool.expire_leases() == []
    assert not keeper.lost.is_set()
    spool.cancel(submission.id)
    assert lost.wait(2) and keeper.lost.is_set()
    keeper.stop()
