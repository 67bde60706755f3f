"""`nixjail serve`: every role of one host, from one command, until stopped.

The parts:

- **api**: waitress in a thread of this process; if it stops, everything stops.
- **runner** and **cache-builder**: each a process of its own
  (`python -m nixjail.supervisor PART`, its settings as JSON on stdin), as
  their units are under systemd. One that dies is started
  again at once, then after 1, 2, 4 ... s while it keeps dying; dying
  `MAX_CRASHES` times within `CRASH_WINDOW_S` stops everything, with that as
  the reason. A new runner removes its predecessor's containers and gives back
  its leases, so a submission it ran is run again.
- **lease-expiry**: a thread that runs the expiry pass (`nixjail.expiry`)
  every `EXPIRY_INTERVAL_S`, as the systemd timer does, and deletes ended
  submissions past their retention every hour, as `nixjail gc` does.

No part idles out. `/healthz` reports each part. SIGTERM or SIGINT stops
the parts (the runner removes its containers and gives their leases back),
and what a killed part left running is removed before this returns.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

from nixjail import holders
from nixjail.api.app import create_app
from nixjail.api.schemas import PartHealth
from nixjail.api.server import ApiServer, bind
from nixjail.callbacks import sender_for
from nixjail.expiry import delete_old_submissions, expire_pass
from nixjail.settings import Settings
from nixjail.spool import Spool

log = logging.getLogger(__name__)

EXPIRY_INTERVAL_S = 2.0
# How often ended submissions past gc.submission_max_age_s are deleted.
RETENTION_INTERVAL_S = 3600.0
CRASH_WINDOW_S = 60.0
MAX_CRASHES = 5
MAX_BACKOFF_S = 30.0
# How long a part may take to stop after SIGTERM (and the runner's grace) before
# it is killed.
STOP_TIMEOUT_S = 30.0
PR_SET_PDEATHSIG = 1


def describe_exit(exitcode: int | None) -> str:
    """How a part's process ended, in words."""
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "an unknown signal"
        return f"killed by signal {-exitcode} ({name})"
    return f"exited with code {exitcode}"


# -- the processes of the parts -------------------------------------------------


def run_part(part: str, settings: Settings) -> None:
    """What a part's process runs (`python -m nixjail.supervisor PART`, the
    settings as JSON on stdin)."""
    # Ctrl-C reaches the whole process group; the supervisor stops each part
    # itself, with SIGTERM, in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, force=True,
                        format=f"%(levelname)s {part}: %(name)s: %(message)s")
    if part == "runner":
        from nixjail.runner.service import run_runner

        run_runner(settings)
    elif part == "cache-builder":
        from nixjail.cache_builder.service import run_cache_builder

        run_cache_builder(settings)
    else:
        raise SystemExit(f"no part {part!r}")


def _die_with_parent(parent: int) -> None:
    """A supervisor killed outright must not leave its parts running."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(0)  # it died before the line above


@dataclass
class ProcessPart:
    """A part that runs in a process of its own, started again when it dies."""

    name: str
    settings: Settings
    process: subprocess.Popen | None = None
    restarts: int = 0
    crashes: list[float] = field(default_factory=list)
    last_exit: str | None = None
    restart_at: float | None = None
    exit_fd: int = -1  # a pidfd: readable once the process has ended

    def start(self) -> None:
        parent = os.getpid()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "nixjail.supervisor", self.name, str(parent)],
            stdin=subprocess.PIPE, close_fds=True)
        self.exit_fd = os.pidfd_open(self.process.pid)
        assert self.process.stdin is not None
        with self.process.stdin, contextlib.suppress(BrokenPipeError):
            self.process.stdin.write(self.settings.model_dump_json().encode())
        self.restart_at = None
        log.info("%s started (pid %s)", self.name, self.process.pid)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ended(self, now: float) -> str | None:
        """Note that the process ended and schedule its restart; the reason to
        stop everything when it died too often."""
        assert self.process is not None
        self.last_exit = describe_exit(self.process.wait())
        os.close(self.exit_fd)
        self.exit_fd = -1
        self.crashes = [t for t in self.crashes if now - t < CRASH_WINDOW_S] + [now]
        if len(self.crashes) >= MAX_CRASHES:
            return (f"the {self.name} stopped {len(self.crashes)} times within "
                    f"{CRASH_WINDOW_S:g} s (last: {self.last_exit})")
        delay = 0.0 if len(self.crashes) == 1 else min(2.0 ** (len(self.crashes) - 2),
                                                       MAX_BACKOFF_S)
        self.restart_at = now + delay
        log.error("%s %s; starting it again in %g s", self.name, self.last_exit, delay)
        return None

    def restart(self) -> None:
        self.restarts += 1
        self.start()

    def terminate(self) -> None:
        if self.running:
            assert self.process is not None
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)

    def join(self, timeout_s: float) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.error("%s did not stop within %g s; killing it", self.name, timeout_s)
            self.process.kill()
            self.process.wait()
        if self.exit_fd >= 0:
            os.close(self.exit_fd)
            self.exit_fd = -1

    def health(self) -> PartHealth:
        pid = self.process.pid if self.running and self.process is not None else None
        return PartHealth(state="running" if pid else "restarting", pid=pid,
                          restarts=self.restarts, last_exit=self.last_exit)


class ExpiryPart(threading.Thread):
    """Lease expiry, a pass every `EXPIRY_INTERVAL_S` until stopped."""

    def __init__(self, settings: Settings, spool: Spool) -> None:
        super().__init__(name="lease-expiry", daemon=True)
        self.settings = settings
        self.spool = spool
        self.stopping = threading.Event()
        self.last_error: str | None = None

    def run(self) -> None:
        next_retention = time.monotonic()
        # Holders here are this host's processes: a dead pid is a gone holder.
        while not self.stopping.wait(EXPIRY_INTERVAL_S):
            try:
                for line in expire_pass(self.settings, holder_alive=holders.holder_alive,
                                        spool=self.spool):
                    log.info("%s", line)
                if time.monotonic() >= next_retention:
                    next_retention = time.monotonic() + RETENTION_INTERVAL_S
                    deleted = delete_old_submissions(self.settings)
                    if deleted:
                        log.info("deleted %d submissions past their retention", len(deleted))
                self.last_error = None
            except Exception as exc:
                self.last_error = f"the last pass failed: {exc}"
                log.exception("lease expiry")

    def health(self) -> PartHealth:
        return PartHealth(state="failing" if self.last_error else "running",
                          last_exit=self.last_error)


class Supervisor:
    """Runs the parts of one host until stopped; see the module's docstring."""

    def __init__(self, settings: Settings, *, listen: str | None = None) -> None:
        self.settings = settings
        self.spool = Spool.from_settings(settings)
        self.parts = [ProcessPart("runner", settings)]
        if settings.cache_builder.enabled:
            self.parts.append(ProcessPart("cache-builder", settings))
        self.expiry = ExpiryPart(settings, self.spool)
        self._lock = threading.Lock()
        # Signals, part exits and the API's end all wake the loop through this.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stop_reason: str | None = None
        self._api_stopped = threading.Event()
        sock = bind(listen or settings.api.listen)
        self.server = ApiServer(create_app(self.spool, settings, parts=self.health),
                                [sock], settings,
                                callbacks=sender_for(self.spool, settings.callbacks))

    @property
    def url(self) -> str:
        return f"http://{self.server.addresses[0]}"

    def health(self) -> dict[str, PartHealth]:
        with self._lock:
            parts = {"api": PartHealth(state="running", pid=os.getpid())}
            parts.update((part.name, part.health()) for part in self.parts)
            parts["lease-expiry"] = self.expiry.health()
            return parts

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_w.send(b"x")

    def stop(self, reason: str = "asked to stop") -> None:
        """Stop everything (from a signal handler or another thread)."""
        if self._stop_reason is None:
            self._stop_reason = reason
        self._wake()

    def _serve_api(self) -> None:
        try:
            self.server.serve_forever()
        except Exception:
            log.exception("the API failed")
        finally:
            self._api_stopped.set()
            self._wake()

    def run(self, ready: Callable[[Supervisor], None] | None = None) -> int:
        """Serve until stopped; 0 when asked to stop, 1 when a part failed for good."""
        def on_signal(signum: int, frame: FrameType | None) -> None:
            self.stop(f"stopped by {signal.Signals(signum).name}")

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, on_signal)
        failure: str | None = None
        api = threading.Thread(target=self._serve_api, name="api", daemon=True)
        try:
            api.start()
            with self._lock:
                for part in self.parts:
                    part.start()
            self.expiry.start()
            if ready is not None:
                ready(self)
            failure = self._watch()
        finally:
            self._shut_down(api)
        if failure is not None:
            log.error("stopping: %s", failure)
            return 1
        log.info("stopped (%s)", self._stop_reason)
        return 0

    def _watch(self) -> str | None:
        """Wait for parts to end and start them again; the reason when one
        failed for good, None when asked to stop."""
        while self._stop_reason is None:
            if self._api_stopped.is_set():
                return "the API stopped"
            now = time.monotonic()
            due = [part.restart_at for part in self.parts if part.restart_at is not None]
            timeout = max(0.0, min(due) - now) if due else None
            waitables: list = [self._wake_r]
            waitables += [part.exit_fd for part in self.parts if part.running]
            select.select(waitables, [], [], timeout)
            with contextlib.suppress(BlockingIOError):
                self._wake_r.recv(4096)
            if self._stop_reason is not None:
                return None
            now = time.monotonic()
            with self._lock:
                for part in self.parts:
                    if part.process is not None and part.restart_at is None \
                            and not part.running:
                        failure = part.ended(now)
                        if failure is not None:
                            return failure
                    if part.restart_at is not None and part.restart_at <= now:
                        part.restart()
        return None

    def _shut_down(self, api: threading.Thread) -> None:
        self.expiry.stopping.set()
        for part in self.parts:
            part.terminate()
        self.server.stop()
        api.join()
        # The runner's submissions get their grace before it stops.
        timeout = self.settings.runner.stop_grace_s + STOP_TIMEOUT_S
        for part in self.parts:
            part.join(timeout)
        self.expiry.join()
        self._remove_leftovers()
        self._wake_r.close()
        self._wake_w.close()

    def _remove_leftovers(self) -> None:
        """Containers of a runner that was killed rather than stopped."""
        from nixjail import docker as nj_docker

        try:
            removed = nj_docker.remove_labelled(nj_docker.client(), holders.runner_name(),
                                                keep=holders.holder_alive)
        except Exception as exc:  # dockerd away: nothing of ours can run there either
            log.warning("could not look for containers left behind: %s", exc)
            return
        if removed:
            log.info("removed containers left behind: %s", ", ".join(removed))


if __name__ == "__main__":
    _die_with_parent(int(sys.argv[2]))
    run_part(sys.argv[1], Settings.model_validate_json(sys.stdin.buffer.read()))
