"""The callback sender against a real spool and a loopback HTTP receiver."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from callback_receiver import Receiver
from nixjail import watch
from nixjail.callbacks import CallbackSender, signature
from nixjail.errors import InvalidInput
from nixjail.models import StageResult, StageStatus, SubmissionRequest
from nixjail.settings import CallbackSettings
from nixjail.spool import Queue, Spool


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "spool", tmp_path / "run", dependency_jobs=False)


def ended(spool: Spool, url: str) -> str:
    """A submission with a callback, taken through its run to `done`."""
    submission = spool.create(SubmissionRequest(shell_nix="x", run_sh="y", callback_url=url))
    lease = spool.lease(Queue.run, "test")
    assert lease is not None
    spool.report_stage(lease, "run", StageResult(status=StageStatus.ok, exit_code=0))
    spool.complete(lease)
    return submission.id


def appears(path: Path, timeout_s: float = 10) -> bool:
    """Whether `path` exists within `timeout_s` (woken by its directory changing)."""
    return _settles(path, True, timeout_s)


def gone(path: Path, timeout_s: float = 10) -> bool:
    return _settles(path, False, timeout_s)


def _settles(path: Path, exists: bool, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    with watch.watcher().changes(path.parent) as change:
        while path.exists() != exists:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            change.wait(remaining)
    return True


def sending(spool: Spool, settings: CallbackSettings) -> Iterator[CallbackSender]:
    sender = CallbackSender(spool, settings)
    sender.start()
    try:
        yield sender
    finally:
        sender.stop()
        sender.join(timeout=5)
        assert not sender.is_alive()


def settings_for(receiver: Receiver, tmp_path: Path, **options: object) -> CallbackSettings:
    (tmp_path / "key").write_text("s3cret\n")
    return CallbackSettings(allowed_prefixes=[receiver.url], secret_file=tmp_path / "key",
                            backoff_s=0.05, **options)


def test_the_end_writes_the_outbox_and_a_2xx_empties_it(spool: Spool, tmp_path: Path) -> None:
    receiver = Receiver([])
    submission_id = ended(spool, receiver.url)
    assert (spool.callbacks_dir / submission_id).is_file()
    for _ in sending(spool, settings_for(receiver, tmp_path)):
        (path, headers, body) = receiver.wait_for(1)[0]
        assert path == "/hook"
        assert headers["X-Nixjail-Signature"] == signature(
            b"s3cret", headers["X-Nixjail-Timestamp"], body)
        assert headers["X-Nixjail-Submission"] == submission_id
        summary = json.loads(body)
        assert (summary["id"], summary["status"]) == (submission_id, "done")
    assert not (spool.callbacks_dir / submission_id).exists()


def test_a_submission_without_callback_url_has_no_entry(spool: Spool) -> None:
    submission = spool.create(SubmissionRequest(shell_nix="x", run_sh="y"))
    spool.cancel(submission.id)
    assert [p.name for p in spool.callbacks_dir.iterdir() if p.is_file()] == []


def test_a_500_is_tried_again_and_a_200_ends_it(spool: Spool, tmp_path: Path) -> None:
    receiver = Receiver([500])
    submission_id = ended(spool, receiver.url)
    for _ in sending(spool, settings_for(receiver, tmp_path)):
        receiver.wait_for(2)
    # Stopped and joined: the try under way finished, and none came after the 200.
    assert len(receiver.requests) == 2
    assert not (spool.callbacks_dir / submission_id).exists()
    assert not (spool.failed_callbacks_dir / submission_id).exists()


def test_a_redirect_is_a_failure_and_is_not_followed(spool: Spool, tmp_path: Path) -> None:
    receiver = Receiver([302])
    submission_id = ended(spool, receiver.url)
    for _ in sending(spool, settings_for(receiver, tmp_path, attempts=1)):
        receiver.wait_for(1)
    assert [path for path, _, _ in receiver.requests] == ["/hook"]  # never /elsewhere
    assert (spool.failed_callbacks_dir / submission_id).exists()


def test_a_refused_connection_is_tried_again_then_given_up(spool: Spool,
                                                          tmp_path: Path) -> None:
    with socket.socket() as closed:  # a loopback port nobody listens on
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/hook"
    submission_id = ended(spool, url)
    settings = CallbackSettings(allowed_prefixes=[url], backoff_s=0.05, attempts=2)
    for _ in sending(spool, settings):
        assert appears(spool.failed_callbacks_dir / submission_id)
    assert not (spool.callbacks_dir / submission_id).exists()


def test_a_url_no_longer_allowed_is_not_sent(spool: Spool, tmp_path: Path) -> None:
    receiver = Receiver([])
    submission_id = ended(spool, receiver.url)
    narrowed = CallbackSettings(allowed_prefixes=["https://elsewhere.invalid/"])
    for _ in sending(spool, narrowed):
        assert appears(spool.failed_callbacks_dir / submission_id)
    assert receiver.requests == []


def test_the_entry_is_written_before_the_record_that_ends(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    submission = spool.create(SubmissionRequest(shell_nix="x", run_sh="y",
                                                callback_url="http://127.0.0.1:9/"))

    def killed(_: object) -> None:  # the process dies as it writes the record
        raise OSError("killed")

    monkeypatch.setattr(spool, "_write", killed)
    with pytest.raises(OSError):
        spool.cancel(submission.id)
    monkeypatch.undo()
    assert (spool.callbacks_dir / submission.id).is_file()
    assert spool.get(submission.id).status == "queued"
    assert spool.owed_callback(submission.id) is None  # promises nothing yet: dropped
    assert not (spool.callbacks_dir / submission.id).exists()


def test_an_entry_whose_submission_did_not_end_is_dropped_until_it_ends(
        spool: Spool, tmp_path: Path) -> None:
    receiver = Receiver([])
    submission = spool.create(SubmissionRequest(shell_nix="x", run_sh="y",
                                                callback_url=receiver.url))
    entry = spool.callbacks_dir / submission.id
    entry.write_bytes(b"")  # as a crash between the entry and the ending record leaves it
    for _ in sending(spool, settings_for(receiver, tmp_path)):
        assert gone(entry)
        assert receiver.requests == []
        spool.cancel(submission.id)  # the end writes the entry again
        (_, _, body) = receiver.wait_for(1)[0]
    assert json.loads(body)["status"] == "cancelled"
    assert len(receiver.requests) == 1


def test_without_a_secret_the_callback_is_unsigned(spool: Spool) -> None:
    receiver = Receiver([])
    ended(spool, receiver.url)
    settings = CallbackSettings(allowed_prefixes=[receiver.url], backoff_s=0.05)
    for _ in sending(spool, settings):
        (_, headers, _) = receiver.wait_for(1)[0]
    assert "X-Nixjail-Signature" not in headers
    assert headers["X-Nixjail-Timestamp"].isdigit()


def test_an_unreadable_or_empty_secret_is_refused_at_start(spool: Spool,
                                                           tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")
    for path, reason in ((tmp_path / "missing", "cannot read"), (tmp_path / "empty", "empty")):
        with pytest.raises(InvalidInput) as refused:
            CallbackSender(spool, CallbackSettings(allowed_prefixes=["http://127.0.0.1/"],
                                                   secret_file=path))
        assert refused.value.field == "callbacks.secret_file"
        assert reason in refused.value.reason


def test_after_every_attempt_failed_the_entry_moves_to_failed(spool: Spool,
                                                              tmp_path: Path) -> None:
    receiver = Receiver([503] * 10)
    submission_id = ended(spool, receiver.url)
    failed = spool.failed_callbacks_dir / submission_id
    for _ in sending(spool, settings_for(receiver, tmp_path, attempts=3)):
        receiver.wait_for(3)
    # The sender finishes the try under way before it stops: the third answer moved it.
    assert failed.exists()
    assert len(receiver.requests) == 3
    assert not (spool.callbacks_dir / submission_id).exists()


def test_an_entry_left_by_an_earlier_process_is_sent(spool: Spool, tmp_path: Path) -> None:
    receiver = Receiver([])
    submission_id = ended(spool, receiver.url)  # no sender ran: as if the API had crashed
    restarted = Spool(spool.spool_dir, spool.run_dir, dependency_jobs=False)
    for _ in sending(restarted, settings_for(receiver, tmp_path)):
        assert json.loads(receiver.wait_for(1)[0][2])["id"] == submission_id


def test_deleting_an_old_submission_drops_its_owed_callback(spool: Spool) -> None:
    submission_id = ended(spool, "http://127.0.0.1:9/hook")
    (spool.callbacks_dir / submission_id).rename(spool.failed_callbacks_dir / submission_id)
    assert spool.delete_ended(3600, now=time.time() + 7200) == [submission_id]
    assert not (spool.failed_callbacks_dir / submission_id).exists()
