"""`nixjail.client` against the real API over loopback HTTP (waitress in a thread)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from waitress import wasyncore
from waitress.server import create_server

from nixjail.api import create_app
from nixjail.client import (
    ApiConflict,
    ApiInvalidInput,
    ApiLeaseLost,
    ApiNotFound,
    ApiUnavailable,
    Client,
    LeasedJob,
    LeaseSource,
    SpoolLeaseSource,
)
from nixjail.errors import ApiError, Conflict, InvalidInput, LeaseLost, NixjailError, NotFound
from nixjail.models import (
    FileContent,
    FileEncoding,
    StageResult,
    StageStatus,
    SubmissionRequest,
    SubmissionStatus,
)
from nixjail.settings import ApiSettings, Settings
from nixjail.spool import Queue, Spool

REQUEST = SubmissionRequest(
    shell_nix="{ pkgs ? import <nixpkgs> {} }: pkgs.mkShell { packages = [ pkgs.hello ]; }",
    files={"main.sh": "echo hi\n",
           "blob.bin": FileContent(content="AAEC/w==", encoding=FileEncoding.base64)},
    run_sh="sh main.sh", stdin="input\n")


@dataclass
class Server:
    url: str
    spool: Spool
    settings: Settings


def serve(tmp_path: Path, **api: object) -> Iterator[Server]:
    settings = Settings(spool_dir=tmp_path / "spool", run_dir=tmp_path / "run", lease_s=5,
                        max_attempts=2, api=ApiSettings(max_wait_s=5, **api))
    spool = Spool.from_settings(settings)
    app = create_app(spool, settings, registry=CollectorRegistry(), kick=lambda: None)
    server = create_server(app, host="127.0.0.1", port=0, threads=4)
    stopping = threading.Event()

    def run() -> None:
        # Served in short rounds and closed from this same thread: closing the
        # sockets under a select() running in another thread races with it.
        while not stopping.is_set():
            wasyncore.loop(timeout=0.05, map=server._map, count=1)
        server.task_dispatcher.shutdown()
        server.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield Server(f"http://127.0.0.1:{server.effective_port}", spool, settings)
    finally:
        stopping.set()
        thread.join(timeout=5)


# A token of both roles: these tests submit and, as a remote worker, lease.
BOTH_ROLES = "both-roles"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"submitter {BOTH_ROLES}\nworker {BOTH_ROLES}\n")
    yield from serve(tmp_path, tokens_file=tokens)


@pytest.fixture
def client(server: Server) -> Client:
    return Client(server.url, BOTH_ROLES)


# -- submitters ------------------------------------------------------------------


def test_submit_get_and_list(server: Server, client: Client) -> None:
    submission = client.submit(REQUEST)
    assert submission.status is SubmissionStatus.queued
    assert submission.request == REQUEST
    assert server.spool.get(submission.id).request.file_bytes()["blob.bin"] == b"\0\1\2\xff"
    assert client.get(submission.id) == submission
    other = client.submit(REQUEST)
    page = client.list(limit=1)
    assert [s.id for s in page.items] == [other.id]
    assert page.next_cursor is not None
    rest = client.list(cursor=page.next_cursor)
    assert [s.id for s in rest.items] == [submission.id]
    assert rest.next_cursor is None
    client.cancel(other.id)
    cancelled = client.list(statuses={SubmissionStatus.cancelled, SubmissionStatus.done})
    assert [s.id for s in cancelled.items] == [other.id]


def test_get_waits_until_the_submission_ends(server: Server, client: Client) -> None:
    submission = client.submit(REQUEST)

    def finish() -> None:
        time.sleep(0.3)
        lease = server.spool.lease(Queue.run, "w")
        assert lease is not None
        server.spool.report_stage(lease, "run", StageResult(status=StageStatus.ok, exit_code=0))
        server.spool.complete(lease)

    threading.Thread(target=finish).start()
    started = time.monotonic()
    ended = client.get(submission.id, wait_s=4)
    assert ended.status is SubmissionStatus.done
    assert 0.2 < time.monotonic() - started < 3
    # a wait that times out answers the submission as it is
    other = client.submit(REQUEST)
    assert client.wait(other.id, timeout_s=0.3, poll_s=0.1).status is SubmissionStatus.queued


def test_submit_with_wait_answers_once_ended_or_timed_out(client: Client) -> None:
    started = time.monotonic()
    assert client.submit(REQUEST, wait_s=0.3).status is SubmissionStatus.queued
    assert time.monotonic() - started >= 0.25


def test_errors_are_nixjail_kinds_with_the_servers_words(client: Client) -> None:
    with pytest.raises(ApiNotFound) as missing:
        client.get("0" * 26)
    assert isinstance(missing.value, NotFound) and missing.value.status == 404
    submission = client.submit(REQUEST)
    client.cancel(submission.id)
    with pytest.raises(ApiConflict) as ended:
        client.cancel(submission.id)
    assert isinstance(ended.value, Conflict)
    assert "already ended as cancelled" in str(ended.value)


def test_refused_request_names_field_and_reason(client: Client) -> None:
    too_long = REQUEST.model_copy(update={"limits": REQUEST.limits.model_copy(update={
        "run": REQUEST.limits.run.model_copy(update={"wall_time_s": 1000})})})
    with pytest.raises(ApiInvalidInput) as refused:
        client.submit(too_long)
    error = refused.value
    assert isinstance(error, InvalidInput) and isinstance(error, ApiError)
    assert 400 <= error.status < 500
    assert error.errors, error
    assert any("wall_time_s" in f"{e['field']} {e['reason']}" for e in error.errors)
    assert "above the maximum 60" in str(error)
    assert error.reason and error.field


def test_unreachable_api(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ApiUnavailable, match="cannot reach the nixjail API"):
        Client(f"http://127.0.0.1:{port}").get("x")
    assert issubclass(ApiUnavailable, NixjailError)


def test_bearer_token(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("submitter s3cret\nworker w0rker\n")
    for running in serve(tmp_path, tokens_file=tokens):
        with pytest.raises(ApiError) as anonymous:
            Client(running.url).list()
        assert anonymous.value.status == 401
        assert Client(running.url, "s3cret").list().items == []
        with pytest.raises(ApiError) as wrong_role:
            Client(running.url, "s3cret").lease(Queue.run, "w")
        assert wrong_role.value.status == 403
        assert Client(running.url, "w0rker").lease(Queue.run, "w") is None


# -- workers ---------------------------------------------------------------------


def test_lease_report_complete(server: Server, client: Client) -> None:
    submission = client.submit(REQUEST)
    assert client.lease(Queue.dependencies, "remote-1") is None  # 204
    job = client.lease(Queue.run, "remote-1", wait_s=1)
    assert isinstance(job, LeasedJob)
    lease, leased, limits = job
    assert (lease.submission_id, lease.queue, lease.holder) == (submission.id, Queue.run,
                                                                 "remote-1")
    assert leased.status is SubmissionStatus.running and leased.attempts == 1
    assert limits == server.settings.resolve_limits(REQUEST)
    renewed = client.renew(lease)
    assert renewed.token == lease.token and renewed.deadline >= lease.deadline
    after = client.report_stage(lease, "compile", StageResult.skipped())
    assert after.stages.compile == StageResult.skipped()
    client.report_stage(lease, "run", StageResult(status=StageStatus.nonzero_exit,
                                                  exit_code=3, stdout="hi\n"))
    done = client.complete(lease)
    assert done.status is SubmissionStatus.done
    assert done.stages.run is not None and done.stages.run.exit_code == 3
    with pytest.raises(ApiLeaseLost) as lost:
        client.renew(lease)
    assert isinstance(lost.value, LeaseLost) and lost.value.status == 409


def test_lease_waits_for_a_job(server: Server, client: Client) -> None:
    threading.Timer(0.3, lambda: server.spool.create(REQUEST)).start()
    job = client.lease(Queue.run, "remote-1", wait_s=3)
    assert job is not None


def test_complete_with_error_and_release(server: Server, client: Client) -> None:
    first, second = client.submit(REQUEST), client.submit(REQUEST)
    job = client.lease(Queue.run, "remote-1")
    assert job is not None and job.lease.submission_id == first.id
    released = client.release(job.lease, "host shutting down")
    assert released.status is SubmissionStatus.queued and released.attempts == 1
    job = client.lease(Queue.run, "remote-1")
    assert job is not None
    ended = client.complete(job.lease, error="container init crashed")
    assert ended.status is SubmissionStatus.error
    assert ended.error == "container init crashed"
    assert {client.get(second.id).status} == {SubmissionStatus.queued}


def test_cancel_reaches_the_holder_as_lease_lost(client: Client) -> None:
    submission = client.submit(REQUEST)
    job = client.lease(Queue.run, "remote-1")
    assert job is not None
    client.cancel(submission.id)
    with pytest.raises(ApiLeaseLost):
        client.report_stage(job.lease, "run", StageResult(status=StageStatus.ok))
    with pytest.raises(LeaseLost):
        client.renew(job.lease)


def test_a_stolen_token_is_lost(client: Client) -> None:
    client.submit(REQUEST)
    job = client.lease(Queue.run, "remote-1")
    assert job is not None
    forged = type(job.lease)(**{**job.lease.__dict__, "token": "forged"})
    with pytest.raises(ApiLeaseLost):
        client.complete(forged)


def test_spool_and_client_are_both_lease_sources(server: Server, client: Client) -> None:
    local = SpoolLeaseSource(server.spool, server.settings)
    for source in (local, client):
        assert isinstance(source, LeaseSource)
    client.submit(REQUEST)
    job = local.lease(Queue.run, "local-1", wait_s=0)
    assert job is not None
    assert job.limits == server.settings.resolve_limits(REQUEST)
    local.report_stage(job.lease, "run", StageResult(status=StageStatus.ok, exit_code=0))
    assert local.complete(job.lease).status is SubmissionStatus.done
