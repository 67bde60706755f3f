"""Callbacks: POST a submission's summary to its `callback_url` when it ends.

The spool writes an outbox entry (`SPOOL/callbacks/ID`, empty) in the same
transition that ends a submission, before the record that ends it, so no
ending loses its callback, even across a crash (`Spool.owed_callback` drops
an entry whose record never ended). The API process runs one
`CallbackSender` thread: it waits for new entries (inotify, through `watch`),
builds each body from the record as it is at sending time, signs it, and
POSTs it. A 2xx answer ends the entry; anything else (another status, a
redirect, a refused connection, a timeout) is tried again after `backoff_s`,
doubled each time, until `attempts` tries; then the entry moves to
`callbacks/failed/`. One sender per spool sends (a lock in the run dir), so
two API processes never send twice.

The signature: `X-Nixjail-Signature: sha256=HEX`, HEX the HMAC-SHA256 of
`TIMESTAMP.` followed by the body under the operator's secret, TIMESTAMP the
`X-Nixjail-Timestamp` header (Unix seconds), so a receiver can refuse old
replays. docs/api.md ("Callbacks") shows how to check it.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from nixjail import watch
from nixjail.errors import InvalidInput
from nixjail.models import Submission, SubmissionSummary
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
        self.secret = _read_secret(settings.secret_file)
        # Straight to the URL the operator allowed: no redirect, no proxy
        # from the environment in between.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                                   _NoRedirects)
        # id -> (tries so far, when the next may go); a restart starts afresh.
        self._tries: dict[str, tuple[int, float]] = {}
        self._lock_path = spool.run_dir / "callbacks.lock"

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        if self.secret is None:
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
                    try:
                        next_due = self.send_due()
                    except Exception:
                        # One bad pass (a full disk, an unreadable record)
                        # must not end the thread: log it and look again later.
                        log.exception("sending callbacks failed")
                        next_due = time.monotonic() + IDLE_WAIT_S
                    wait_s = IDLE_WAIT_S if next_due is None else next_due - time.monotonic()
                    # A stop sets no file event: look at it at least every second.
                    change.wait(min(max(wait_s, 0.0), 1.0))

    def send_due(self) -> float | None:
        """Try every entry that is due; when the next one will be (monotonic)."""
        next_due: float | None = None
        for name in self.spool.callbacks_due():
            if self.stopping.is_set():
                break
            tries, due = self._tries.get(name, (0, 0.0))
            if due > time.monotonic():
                next_due = due if next_due is None else min(next_due, due)
                continue
            submission = self.spool.owed_callback(name)
            if submission is None:
                self._tries.pop(name, None)
                continue
            problem, final = self._send(submission)
            if problem is None:
                self._tries.pop(name, None)
                self.spool.drop_callback(name)
                continue
            tries += 1
            if final or tries >= self.settings.attempts:
                log.warning("callback of %s failed %d times, giving up: %s", name, tries,
                            problem)
                self._tries.pop(name, None)
                self.spool.drop_callback(name, failed=True)
                continue
            due = time.monotonic() + self.settings.backoff_s * 2 ** (tries - 1)
            log.info("callback of %s failed (%s); try %d in %.2f s", name, problem,
                     tries + 1, due - time.monotonic())
            self._tries[name] = (tries, due)
            next_due = due if next_due is None else min(next_due, due)
        return next_due

    def _send(self, submission: Submission) -> tuple[str | None, bool]:
        """POST one summary: (None, _) when the receiver took it, else (what went
        wrong, whether trying again is of no use)."""
        url = submission.request.callback_url
        if url is None:
            return None, True  # nothing to send (the entry was not the spool's)
        # Checked again now: the operator may have narrowed the prefixes since
        # the submission was accepted, and only HTTP is ever sent.
        if not any(url.startswith(prefix) for prefix in self.settings.allowed_prefixes):
            return "callback_url is no longer under callbacks.allowed_prefixes", True
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            return "callback_url is not an http or https URL", True
        body = SubmissionSummary.of(submission).model_dump_json().encode()
        timestamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", "X-Nixjail-Timestamp": timestamp,
                   "X-Nixjail-Submission": submission.id, "User-Agent": "nixjail-callbacks"}
        if self.secret is not None:
            headers["X-Nixjail-Signature"] = signature(self.secret, timestamp, body)
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.settings.timeout_s) as answer:
                answer.read(64 * 1024)
                return (None if 200 <= answer.status < 300 else f"HTTP {answer.status}",
                        False)
        except urllib.error.HTTPError as refused:  # also every 3xx: none is followed
            return f"HTTP {refused.code}", False
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return str(getattr(exc, "reason", exc)), False


def _read_secret(path: Path | None) -> bytes | None:
    """The signing key, read once: the file's content, surrounding white space
    stripped (so a trailing newline does not count)."""
    if path is None:
        return None
    try:
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise InvalidInput("callbacks.secret_file",
                           f"cannot read {path}: {exc.strerror}") from None
    if not secret:
        raise InvalidInput("callbacks.secret_file", f"{path} is empty")
    return secret


def sender_for(spool: Spool, settings: CallbackSettings) -> CallbackSender | None:
    """A sender when the server allows callbacks at all."""
    return CallbackSender(spool, settings) if settings.allowed_prefixes else None
