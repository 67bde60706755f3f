"""The runner service: N submissions at once, woken by kicks, gone when idle.

systemd starts it when the API connects to the kick socket after an enqueue
(socket activation); it leases run jobs until none has come for
`idle_exit_s`, then exits, and the socket starts it again on the next kick.
On start it removes what a crashed predecessor left: its labelled containers
and the leases it held.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from pathlib import Path

import docker

from nixjail import docker as nj_docker
from nixjail import holders, systemd
from nixjail.client import LeasedJob, LeaseSource
from nixjail.errors import NixjailError
from nixjail.leasing import serve_jobs
from nixjail.runner.worker import run_submission
from nixjail.settings import Settings
from nixjail.spool import Queue, Spool

log = logging.getLogger(__name__)

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

    def clean_up_after_crash(self) -> None:
        """Remove containers and leases a previous process of this runner left."""
        removed = nj_docker.remove_labelled(self.docker, self.name)
        if removed:
            log.info("removed containers left behind: %s", ", ".join(removed))
        if self.spool is not None:
            released = self.spool.release_held_by(
                f"{self.name}/", "the runner holding it restarted", keep=self.holder)
            if released:
                log.info("gave back leases left behind: %s", ", ".join(released))

    def serve(self, listener: socket.socket | None = None) -> None:
        """Lease and run until idle for `idle_exit_s` or asked to stop.

        `listener` is the kick socket of this host's API; without one (a
        worker host of its own) the runner long-polls its lease source.
        """
        self.clean_up_after_crash()
        kicked = None
        if listener is not None:
            kicked = threading.Event()
            KickListener(listener, kicked).start()
        systemd.notify("READY=1")
        serve_jobs(self.source, Queue.run, self.holder,
                   slots=self.settings.runner.concurrency,
                   idle_exit_s=self.settings.runner.idle_exit_s,
                   process=self._run_one, stopping=self.stopping, kicked=kicked)
        systemd.notify("STOPPING=1")

    def _run_one(self, leased: LeasedJob) -> None:
        try:
            run_submission(self.source, self.docker, self.settings, self.name, leased)
        except Exception:
            log.exception("running %s failed", leased.submission.id)
            with contextlib.suppress(NixjailError):
                self.source.release(leased.lease, "the runner failed while running it")
