"""What every leasing service shares: where it leases from, keeping a lease
alive while the job runs, and the loop that runs N jobs at once.

The runner (run jobs) and the cache builder (dependencies jobs) both stand
on these; each brings only what it does with a job.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

from nixjail.client import Client, LeasedJob, LeaseSource, SpoolLeaseSource
from nixjail.errors import LeaseLost, NixjailError
from nixjail.kick import runner_kicker
from nixjail.settings import Settings
from nixjail.spool import Lease, Queue, Spool

log = logging.getLogger(__name__)

# How long to wait for a job before looking again; a kick cuts it short.
POLL_S = 1.0


def lease_source(settings: Settings, api_url: str | None,
                 api_token_file: Path | None) -> tuple[LeaseSource, Spool | None]:
    """The API on another host when `api_url` is set, else this host's spool
    (returned too: only there can a restarted service give back its
    predecessor's leases at once; over HTTP they expire by their deadline)."""
    if api_url:
        token = api_token_file.read_text().strip() if api_token_file else None
        return Client(api_url, token), None
    spool = Spool.from_settings(settings)
    return SpoolLeaseSource(spool, settings, kick=runner_kicker(settings.runner.kick_socket)), spool


class LeaseKeeper(threading.Thread):
    """Renews a lease every `interval_s` while its job runs.

    When the lease is lost (the submission was cancelled, or this host
    stalled past the deadline and the job went back to the queue) it sets
    `lost` and calls `on_lost`, which stops the job.
    """

    def __init__(self, source: LeaseSource, lease: Lease, interval_s: float,
                 on_lost: Callable[[], None] | None = None) -> None:
        super().__init__(name=f"lease-{lease.submission_id}", daemon=True)
        self.source = source
        self.lease = lease
        self.interval_s = interval_s
        self.on_lost = on_lost
        self.lost = threading.Event()
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.wait(self.interval_s):
            try:
                self.lease = self.source.renew(self.lease)
            except LeaseLost as exc:
                log.info("%s", exc)
                self.lost.set()
                if self.on_lost is not None:
                    self.on_lost()
                return
            except NixjailError as exc:  # the API may be away for a moment
                log.warning("renewing %s: %s", self.lease.submission_id, exc)

    def stop(self) -> None:
        self._stopping.set()


def serve_jobs(source: LeaseSource, queue: Queue, holder: str, *, slots: int,
               idle_exit_s: float | None, process: Callable[[LeasedJob], object],
               stopping: threading.Event, kicked: threading.Event | None = None,
               ready: Callable[[], str | None] | None = None) -> None:
    """Lease jobs of `queue` and run `process` on each, `slots` at once, until
    `stopping` is set or nothing came for `idle_exit_s` (None: never idle out).

    With `kicked` (set by whoever enqueues on this host) the loop looks for a
    job at once and then sleeps until a kick; without, it long-polls the
    source. `ready` says why this host cannot run a job now (dockerd away),
    or None: no job is leased meanwhile, so none uses up an attempt.
    """
    running: set[Future] = set()
    idle_since = time.monotonic()
    not_ready: str | None = None
    with ThreadPoolExecutor(max_workers=slots, thread_name_prefix=queue.value) as pool:
        while not stopping.is_set():
            running = {f for f in running if not f.done()}
            if len(running) >= slots:
                wait(running, timeout=POLL_S, return_when=FIRST_COMPLETED)
                continue
            why = ready() if ready is not None else None
            if why != not_ready:
                if why:
                    log.warning("not leasing until this host is ready again: %s", why)
                else:
                    log.info("ready again, leasing")
                not_ready = why
            if why:
                stopping.wait(POLL_S)
                idle_since = time.monotonic()
                continue
            # Exiting as soon as the queue is empty: do not wait for a job.
            long_poll = kicked is None and not (idle_exit_s == 0 and not running)
            try:
                leased = source.lease(queue, holder, wait_s=POLL_S if long_poll else 0)
            except NixjailError as exc:
                log.warning("leasing: %s", exc)
                stopping.wait(POLL_S)
                continue
            if leased is not None and stopping.is_set():
                # Asked to stop while the long-poll waited: not this worker's job now.
                with contextlib.suppress(NixjailError):
                    source.release(leased.lease, "the worker was stopping", tried=False)
                break
            if leased is not None:
                log.info("%s job of %s (attempt %d)", queue.value, leased.submission.id,
                         leased.submission.attempts)
                running.add(pool.submit(process, leased))
            if leased is not None or running:
                idle_since = time.monotonic()
            elif idle_exit_s is not None and time.monotonic() - idle_since >= idle_exit_s:
                log.info("idle for %.0f s, exiting", idle_exit_s)
                return
            if leased is None and kicked is not None:
                kicked.wait(POLL_S)
                kicked.clear()
