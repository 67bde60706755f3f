"""Callbacks: POST a submission's summary to its `callback_url` when it ends.

The spool writes an outbox entry (`SPOOL/callbacks/ID`, empty) in the same
transition that ends a submission, so no ending loses its callback, even
across a crash. The API process runs one `CallbackSender` thread: it waits
for new entries (inotify, through `watch`), builds each body from the record
as it is at sending time, signs it, and POSTs it. A 2xx answer ends the
entry; anything else (another status, a redirect, a refused connection, a
timeout) is tried again after `backoff_s`, doubled each time, until
`attempts` tries; then the entry moves to `callbacks/failed/`. One sender per
spool sends (a lock in the run dir), so two API processes never send twice.

The signature: `X-Nixjail-Signature: sha256=HEX`, HEX the HMAC-SHA256 of
`TIMESTAMP.` followed by the body under the operator's secret, TIMESTAMP the
`X-Nixjail-Timestamp` header (Unix seconds), so a receiver can refuse old
replays. docs/api.md ("Callbacks") shows how to check it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import logging
import os
import threading
import time
import urllib.error
import urllib.request

from nixjail import watch
from nixjail.errors import NotFound
from nixjail.models import SubmissionSummary
from nixjail.settings import CallbackSettings
from nixjail.spool import Spool

log = logging.getLogger(__name__)

# The longest the sender sleeps without looking (a stop, a lost lock holder).
IDLE_WAIT_S = 30.0


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # A redirect could lead outside the prefixes the operator allows.
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """The value of X-Nixjail-Signature for `body` sent at `timestamp`."""
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class CallbackSender(threading.Thread):
    """Delivers the spool's outbox until stopped."""

    def __init__(self, spool: Spool, settings: CallbackSettings) -> None:
        super().__init__(name="callbacks", daemon=True)
        self.spool = spool
        self.settings = settings
        self.stopping = threading.Event()
        self.secret = settings.secret_file.read_bytes().strip() if settings.secret_file \
            else None
        self._opener = urllib.request.build_opener(_NoRedirects)
        # id -> (tries so far, when the next may go); a restart starts afresh.
        self._tries: dict[str, tuple[int, float]] = {}
        self._lock_path = spool.run_dir / "callbacks.lock"

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        if self.secret is None and self.settings.allowed_prefixes:
            log.warning("callbacks are sent unsigned: callbacks.secret_file is not set")
        with open(self._lock_path, "a") as lock:
            while not self.stopping.is_set():
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    self.stopping.wait(IDLE_WAIT_S)  # another process sends
            with watch.watcher().changes(self.spool.callbacks_dir) as change:
                while not self.stopping.is_set():
                    next_due = self.send_due()
                    wait_s = IDLE_WAIT_S if next_due is None else next_due - time.monotonic()
                    # A stop sets no file event: look at it at least every second.
                    change.wait(min(max(wait_s, 0.0), 1.0))

    def send_due(self) -> float | None:
        """Try every entry that is due; when the next one will be (monotonic)."""
        next_due: float | None = None
        for name in sorted(os.listdir(self.spool.callbacks_dir)):
            entry = self.spool.callbacks_dir / name
            if not entry.is_file() or self.stopping.is_set():
                continue
            tries, due = self._tries.get(name, (0, 0.0))
            if due > time.monotonic():
                next_due = due if next_due is None else min(next_due, due)
                continue
            problem = self._send(name)
            if problem is None:
                self._tries.pop(name, None)
                entry.unlink(missing_ok=True)
                continue
            tries += 1
            if tries >= self.settings.attempts:
                log.warning("callback of %s failed %d times, giving up: %s", name, tries,
                            problem)
                self._tries.pop(name, None)
                with contextlib.suppress(FileNotFoundError):
                    entry.rename(self.spool.failed_callbacks_dir / name)
                continue
            due = time.monotonic() + self.settings.backoff_s * 2 ** (tries - 1)
            log.info("callback of %s failed (%s); try %d in %.1f s", name, problem,
                     tries + 1, due - time.monotonic())
            self._tries[name] = (tries, due)
            next_due = due if next_due is None else min(next_due, due)
        return next_due

    def _send(self, submission_id: str) -> str | None:
        """POST one summary; None when the receiver took it, else what went wrong."""
        try:
            submission = self.spool.get(submission_id)
        except NotFound:
            return None  # deleted since (gc): nothing left to tell
        if submission.request.callback_url is None or not submission.status.ended:
            return None
        body = SubmissionSummary.of(submission).model_dump_json().encode()
        timestamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", "X-Nixjail-Timestamp": timestamp,
                   "X-Nixjail-Submission": submission.id, "User-Agent": "nixjail-callbacks"}
        if self.secret is not None:
            headers["X-Nixjail-Signature"] = signature(self.secret, timestamp, body)
        request = urllib.request.Request(submission.request.callback_url, data=body,
                                         headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.settings.timeout_s) as answer:
                answer.read(64 * 1024)
                return None if 200 <= answer.status < 300 else f"HTTP {answer.status}"
        except urllib.error.HTTPError as refused:
            return f"HTTP {refused.code}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return str(getattr(exc, "reason", exc))


def sender_for(spool: Spool, settings: CallbackSettings) -> CallbackSender | None:
    """A sender when the server allows callbacks at all."""
    return CallbackSender(spool, settings) if settings.allowed_prefixes else None

