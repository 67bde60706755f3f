"""Waking the runner after an enqueue.

A connection to the runner's socket is the whole message: systemd starts the
socket-activated runner on it, and a running one looks at its queues again.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


def runner_kicker(path: Path) -> Callable[[], None]:
    def kick() -> None:
        # Non-blocking: a full backlog or a missing socket must never delay an
        # answer; the runner also polls, so a lost kick only costs latency.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.setblocking(False)
            try:
                sock.connect(str(path))
            except OSError as exc:
                log.debug("could not kick the runner at %s: %s", path, exc)

    return kick
