"""Full queues and a full disk: clear refusals that say when to come back, and
nothing lost or torn."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_helpers import sample_request, start_server
from reliability import Figures

from nixjail.client import Client
from nixjail.models import SubmissionRequest, SubmissionStatus


def test_past_the_queue_bound_a_submission_is_429_with_retry_after(make_api) -> None:
    api = make_api(max_queued=3)
    for _ in range(3):
        api.submit()
    answer = api.post("/v1/submissions", json=sample_request())
    assert answer.status_code == 429
    assert answer.headers["Retry-After"] == "5"
    assert answer.json()["errors"][0]["field"] == "queue"
    assert len(api.spool.list()[0]) == 3  # the refused one was not stored


def test_the_client_waits_and_submits_again_once_there_is_room(make_api) -> None:
    api = make_api(max_queued=1)
    first = api.submit()
    client = Client(api.url, "both-token-1")
    done: list = []
    submitter = threading.Thread(target=lambda: done.append(client.submit(
        SubmissionRequest.model_validate(sample_request()), busy_retry_s=30)))
    submitter.start()
    api.finish(first["id"])  # room again: the waiting client gets in
    submitter.join(timeout=30)
    assert done and done[0].status is SubmissionStatus.queued


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_full_spool_disk_is_507_and_recovers_with_nothing_torn(tiny_disk: Path,
                                                                 tmp_path: Path) -> None:
    ballast = tiny_disk / "ballast"  # what the operator frees once the disk is full
    ballast.write_bytes(b"\0" * (512 << 10))
    api, stop = start_server(tmp_path / "api", spool_dir=tiny_disk)
    try:
        accepted, refused = [], None
        for _ in range(200):
            answer = api.post("/v1/submissions", json=sample_request(stdin="z" * 60_000))
            if answer.status_code != 202:
                refused = answer
                break
            accepted.append(answer.json()["id"])
        assert refused is not None and accepted, "the disk never filled"
        full_at = time.monotonic()
        assert refused.status_code == 507, refused.text
        assert refused.json()["errors"][0]["field"] == "spool"
        assert refused.headers["Retry-After"] == "30"
        assert api.get("/healthz", token=None).status_code == 503
        # Every acknowledged submission is whole; no temporary file is left.
        for submission_id in accepted:
            assert api.spool.get(submission_id).status is SubmissionStatus.queued
        leftovers = [p for p in tiny_disk.rglob(".*") if p.is_file()]
        assert leftovers == []
        # Room again: it takes submissions as before.
        ballast.unlink()
        assert api.post("/v1/submissions", json=sample_request()).status_code == 202
        assert api.get("/healthz", token=None).status_code == 200
        whole = sum(api.spool.get(i).status is SubmissionStatus.queued for i in accepted)
        Figures("the spool's disk full (a 1 MiB tmpfs): 507, then space freed",
                acknowledged=len(accepted), finished=whole, lost=len(accepted) - whole,
                recovery_s=time.monotonic() - full_at,
                extra={"refused_with": refused.status_code}).record()
    finally:
        stop()
