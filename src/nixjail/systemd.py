"""What nixjail's services need from systemd: passed sockets and sd_notify.

Both are environment protocols, harmless when systemd is not the caller: no
LISTEN_FDS means no sockets, no NOTIFY_SOCKET means notifications go nowhere.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

import sdnotify

log = logging.getLogger(__name__)

SD_LISTEN_FDS_START = 3


def listen_fds(*, unset_environment: bool = True) -> list[socket.socket]:
    """The sockets systemd passed to this process (fds 3, 4, ...), if any.

    Like sd_listen_fds(3): only when LISTEN_PID names this process, so a child
    that inherited the environment does not take its parent's sockets.
    """
    try:
        pid = int(os.environ.get("LISTEN_PID", ""))
        count = int(os.environ.get("LISTEN_FDS", ""))
    except ValueError:
        return []
    if unset_environment:
        for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(name, None)
    if pid != os.getpid() or count <= 0:
        return []
    sockets = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count):
        os.set_inheritable(fd, False)
        sockets.append(socket.socket(fileno=fd))  # family and type come from the fd
    return sockets


def notify(*states: str) -> bool:
    """Send `states` (such as "READY=1") to systemd; False when nobody listens."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return False
    notifier = sdnotify.SystemdNotifier()
    if notifier.socket is None:
        return False
    try:
        notifier.notify("\n".join(states))
    finally:
        notifier.socket.close()
    return True


def watchdog_interval() -> float | None:
    """Seconds between watchdog pings (half of WATCHDOG_USEC), or None when off."""
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    watchdog_pid = os.environ.get("WATCHDOG_PID")
    if usec <= 0 or (watchdog_pid and watchdog_pid != str(os.getpid())):
        return None
    return usec / 2 / 1_000_000


class Watchdog:
    """Pings WATCHDOG=1 from a thread while the service runs."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sd-watchdog", daemon=True)

    @classmethod
    def start_if_enabled(cls) -> Watchdog | None:
        interval = watchdog_interval()
        if interval is None:
            return None
        watchdog = cls(interval)
        watchdog._thread.start()
        return watchdog

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            notify("WATCHDOG=1")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
