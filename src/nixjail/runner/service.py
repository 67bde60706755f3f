"""The runner service: N submissions at once, woken by kicks, gone when idle.

Under `nixjail serve` it never idles out (`idle_exit_s` none). Stopping it
(SIGTERM) ends leasing; the submissions it runs get `stop_grace_s` to end,
then their containers are removed and their leases given back.

systemd starts it when the API connects to the kick socket after an enqueue
(socket activation); it leases run jobs until none has come for
`idle_exit_s`, then exits, and the socket starts it again on the next kick.
On start it removes what a crashed predecessor left: its labelled containers
and the leases it held. With `pool_size`, it keeps that many containers
started ahead of need (`nixjail.runner.pool`) and removes them when it exits.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
import time
from pathlib import Path

import docker
import docker.errors
import requests.exceptions

from nixjail import docker as nj_docker
from nixjail import holders, systemd
from nixjail.client import LeasedJob, LeaseSource
from nixjail.errors import NixjailError
from nixjail.leasing import lease_source, serve_jobs
from nixjail.runner.pool import WarmPool
from nixjail.runner.worker import pool_preparer, run_submission
from nixjail.settings import Settings
from nixjail.spool import Queue, Spool

log = logging.getLogger(__name__)

# The longest pause in leasing after dockerd failed a job.
DOCKER_BACKOFF_MAX_S = 30.0

class KickListener(threading.Thread):
    """Accepts connections on the kick socket; each one wakes the lease loop."""

    def __init__(self, listener: socket.socket, kicked: threading.Event) -> None:
        super().__init__(name="kicks", daemon=True)
        self.listener = listener
        self.kicked = kicked

    def run(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return  # closed on shutdown
            connection.close()
            self.kicked.set()


def kick_socket(path: Path) -> socket.socket:
    """The socket systemd passed in, or one bound here when run by hand."""
    passed = systemd.listen_fds()
    if passed:
        return passed[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(64)
    return listener


class Runner:
    def __init__(self, settings: Settings, source: LeaseSource,
                 docker_client: docker.DockerClient, *, name: str | None = None,
                 spool: Spool | None = None) -> None:
        self.settings = settings
        self.source = source
        self.docker = docker_client
        self.name = name or holders.runner_name()
        # One holder per process (and unit invocation): leases of an earlier
        # process of this runner are recognisably not ours and are given
        # back on start.
        self.holder = holders.holder(self.name)
        self.spool = spool
        self.stopping = threading.Event()
        self._running = 0
        self._idle = threading.Condition()
        self._leftovers_removed = False
        # After dockerd failed a job: no leasing until then, longer each time.
        self._docker_failures = 0
        self._docker_back_at = 0.0
        self._docker_failure = ""
        self.pool: WarmPool | None = None  # made when serving, with runner.pool_size

    def stop(self) -> None:
        """Stop leasing; the submissions running now get `stop_grace_s` to end,
        then their containers are removed and their leases go back to the
        queue. Safe to call from a signal handler."""
        self.stopping.set()

    def _stop_containers_when_stopping(self) -> None:
        self.stopping.wait()
        with self._idle:
            self._idle.wait_for(lambda: self._running == 0,
                                timeout=self.settings.runner.stop_grace_s)
        try:
            removed = nj_docker.remove_labelled(self.docker, self.name,
                                                keep=lambda holder: holder != self.holder)
        except docker.errors.DockerException as exc:
            log.error("stopping the running containers: %s", exc)
            return
        if removed:
            log.info("stopped the running containers: %s", ", ".join(removed))

    def _predecessor_alive(self, holder: str) -> bool:
        # An earlier process of this runner that still runs (it is stopping,
        # say) finishes or gives back its own work: leave it be.
        return holder != self.holder and holders.holder_alive(holder, names={self.name})

    def _remove_leftover_containers(self) -> bool:
        """Remove the containers dead earlier processes of this runner left;
        False when dockerd cannot be asked now (it is done once it can)."""
        try:
            removed = nj_docker.remove_labelled(self.docker, self.name,
                                                keep=self._predecessor_alive)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            log.warning("cannot look for containers left behind yet: %s", exc)
            return False
        if removed:
            log.info("removed containers left behind: %s", ", ".join(removed))
        return True

    def clean_up_after_crash(self) -> None:
        """Remove containers and leases that dead earlier processes of this runner left."""
        self._leftovers_removed = self._remove_leftover_containers()
        if self.spool is not None:
            released = self.spool.release_held_by(
                f"{self.name}/", "the runner holding it restarted", keep=self.holder,
                alive=self._predecessor_alive)
            if released:
                log.info("gave back leases left behind: %s", ", ".join(released))

    def serve(self, listener: socket.socket | None = None) -> None:
        """Lease and run until idle for `idle_exit_s` or asked to stop.

        `listener` is the kick socket of this host's API; without one (a
        worker host of its own) the runner long-polls its lease source.
        """
        self.clean_up_after_crash()
        threading.Thread(target=self._stop_containers_when_stopping, name="stopper",
                         daemon=True).start()
        kicked = None
        if listener is not None:
            kicked = threading.Event()
            KickListener(listener, kicked).start()
        if self.settings.runner.pool_size:
            self.pool = WarmPool(self.docker, self.settings.runner.pool_size,
                                 pool_preparer(self.settings, self.name, self.holder))
        systemd.notify("READY=1")
        try:
            serve_jobs(self.source, Queue.run, self.holder,
                       slots=self.settings.runner.concurrency,
                       idle_exit_s=self.settings.runner.idle_exit_s,
                       process=self._run_one, stopping=self.stopping, kicked=kicked,
                       ready=self._docker_unready)
        finally:
            systemd.notify("STOPPING=1")
            if self.pool is not None:
                self.pool.stop()

    def _docker_failed(self, reason: str) -> None:
        self._docker_failures += 1
        pause = min(2.0 ** (self._docker_failures - 1), DOCKER_BACKOFF_MAX_S)
        self._docker_back_at = time.monotonic() + pause
        self._docker_failure = reason

    def _docker_unready(self) -> str | None:
        """Why dockerd cannot take a container now, or None."""
        if time.monotonic() < self._docker_back_at:
            return f"{self._docker_failure} (trying again shortly)"
        try:
            self.docker.ping()
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            return f"dockerd does not answer: {exc}"
        if not self._leftovers_removed:
            self._leftovers_removed = self._remove_leftover_containers()
        return None

    def _run_one(self, leased: LeasedJob) -> None:
        with self._idle:
            self._running += 1
        try:
            failures = self._docker_failures
            run_submission(self.source, self.docker, self.settings, self.name, leased,
                           stopping=self.stopping, host_failed=self._docker_failed,
                           pool=self.pool)
            if self._docker_failures == failures:
                self._docker_failures = 0  # dockerd ran it: it is back
        except Exception:
            log.exception("running %s failed", leased.submission.id)
            with contextlib.suppress(NixjailError):
                self.source.release(leased.lease, "the runner failed while running it")
        finally:
            with self._idle:
                self._running -= 1
                self._idle.notify_all()


def run_runner(settings: Settings, *, kicks: bool = True) -> None:
    """Serve as this host's runner until SIGTERM: the `nixjail runner`
    command, and the runner part of `nixjail serve`."""
    source, spool = lease_source(settings, settings.runner.api_url,
                                 settings.runner.api_token_file)
    runner = Runner(settings, source, nj_docker.client(), spool=spool)
    signal.signal(signal.SIGTERM, lambda *_: runner.stop())
    # Only this host's API kicks: a worker host of its own long-polls instead.
    listener = kick_socket(settings.runner.kick_socket) \
        if kicks and not settings.runner.api_url else None
    try:
        runner.serve(listener)
    finally:
        if listener is not None:
            listener.close()
