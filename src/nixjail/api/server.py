"""Serving the app with waitress, on systemd's socket or on settings.api.listen."""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType

import falcon
import waitress
from waitress import wasyncore
from waitress.server import BaseWSGIServer

from nixjail import systemd
from nixjail.api.app import create_app
from nixjail.callbacks import CallbackSender, sender_for
from nixjail.errors import InvalidInput
from nixjail.settings import Settings
from nixjail.spool import Spool

log = logging.getLogger(__name__)

# How long requests under way may take to finish after SIGTERM.
SHUTDOWN_GRACE_S = 5.0
# Bodies up to this are read through and answered in JSON, whatever the cap.
DRAIN_BYTES = 64 * 1024 * 1024


def bind(listen: str) -> socket.socket:
    """A listening TCP socket for HOST:PORT (IPv6 hosts in brackets; port 0 picks one)."""
    host, sep, port = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise InvalidInput("listen", f"expected HOST:PORT, got {listen!r}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, int(port)), family=family, backlog=128)
    except OSError as exc:
        raise InvalidInput("listen", f"cannot listen on {listen}: {exc.strerror}") from None


class ApiServer:
    """waitress around the app, stoppable from a signal handler or another thread."""

    def __init__(self, app: falcon.App, sockets: Sequence[socket.socket],
                 settings: Settings, *, callbacks: CallbackSender | None = None) -> None:
        # The API process sends the callbacks of the spool it serves.
        self.callbacks = callbacks
        self._map: dict[int, wasyncore.dispatcher] = {}
        self._stop = threading.Event()
        # waitress reads a whole body before the app sees it, so a body over
        # the cap but under this is read (and dropped) and gets the app's JSON
        # 413, even from a client that sends it all before reading. Above it
        # waitress refuses by itself (plain text): no client makes it buffer
        # gigabytes.
        backstop = max(DRAIN_BYTES, 4 * settings.api.max_body_bytes,
                       2 * settings.max_report_bytes)
        self._server = waitress.create_server(
            app, map=self._map, sockets=list(sockets), threads=settings.api.threads,
            max_request_body_size=backstop, ident="nixjail")
        self.sockets = list(sockets)

    @property
    def addresses(self) -> list[str]:
        return [_describe(sock) for sock in self.sockets]

    def serve_forever(self) -> None:
        adj = self._server.adj

        def turn(timeout: float = adj.asyncore_loop_timeout) -> None:
            wasyncore.loop(timeout=timeout, map=self._map,
                           use_poll=adj.asyncore_use_poll, count=1)

        if self.callbacks is not None:
            self.callbacks.start()
        try:
            while not self._stop.is_set() and self._map:
                turn()
            self._drain(turn)
        finally:
            if self.callbacks is not None:
                # Let a POST under way finish, so its entry is dropped, not sent twice.
                self.callbacks.stop()
                self.callbacks.join(SHUTDOWN_GRACE_S)
            self._server.task_dispatcher.shutdown(timeout=1)
            wasyncore.close_all(self._map)

    def _drain(self, turn: Callable[[float], None]) -> None:
        """Stop accepting, then let requests under way finish and their answers
        go out (a long-poll is cut at the grace), so a restart loses no answer."""
        for dispatcher in list(self._map.values()):
            if isinstance(dispatcher, BaseWSGIServer):
                wasyncore.dispatcher.close(dispatcher)  # the listener; keep the trigger
        tasks = self._server.task_dispatcher
        deadline = time.monotonic() + SHUTDOWN_GRACE_S
        while time.monotonic() < deadline:
            busy = tasks.active_count or tasks.queue or any(
                getattr(channel, "total_outbufs_len", 0) for channel in self._map.values())
            if not busy:
                return
            turn(0.05)  # a worker finishing does not always wake the loop

    def stop(self) -> None:
        self._stop.set()
        for dispatcher in list(self._map.values()):
            if isinstance(dispatcher, BaseWSGIServer):
                # Wake the loop now, not at its timeout. The loop may have seen
                # the flag and closed the trigger already: then it is awake.
                with contextlib.suppress(OSError):
                    dispatcher.pull_trigger()


def _describe(sock: socket.socket) -> str:
    address = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return str(address)
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def serve(settings: Settings, spool: Spool, *, listen: str | None = None) -> int:
    """Serve until SIGTERM or SIGINT; speaks sd_notify when systemd runs it."""
    sockets = systemd.listen_fds() or [bind(listen or settings.api.listen)]
    server = ApiServer(create_app(spool, settings), sockets, settings,
                       callbacks=sender_for(spool, settings.callbacks))

    def stop(signum: int, frame: FrameType | None) -> None:
        systemd.notify("STOPPING=1")
        server.stop()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)
    log.info("nixjail API listening on %s", ", ".join(server.addresses))
    systemd.notify("READY=1", f"STATUS=listening on {', '.join(server.addresses)}")
    watchdog = systemd.Watchdog.start_if_enabled()
    try:
        server.serve_forever()
    finally:
        if watchdog is not None:
            watchdog.stop()
    log.info("nixjail API stopped")
    return 0
