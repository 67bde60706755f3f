"""PID 1 duties: reap every child (orphans included), notice SIGTERM/SIGINT, wake loops.

One place calls wait: statuses of children init is waiting for are kept by pid, orphans
reparented to PID 1 are reaped and forgotten.
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ChildExit:
    status: int  # raw wait status
    rusage: Any  # resource.struct_rusage


class Reaper:
    def __init__(self) -> None:
        # Signal handlers only note the signal; the wake-up pipe makes select() return.
        self.wake_fd, wake_w = os.pipe()
        os.set_blocking(self.wake_fd, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        self.terminate_signal: int | None = None
        self._watched: set[int] = set()
        self._exits: dict[int, ChildExit] = {}
        signal.signal(signal.SIGCHLD, self._on_child)
        signal.signal(signal.SIGTERM, self._on_terminate)
        signal.signal(signal.SIGINT, self._on_terminate)

    def _on_child(self, signum: int, frame: object) -> None:
        pass

    def _on_terminate(self, signum: int, frame: object) -> None:
        if self.terminate_signal is None:
            self.terminate_signal = signum

    def drain_wakeups(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.wake_fd, 512):
                pass

    def watch(self, pid: int) -> None:
        self._watched.add(pid)

    def reap(self) -> None:
        """Collect every exited child without blocking."""
        while True:
            try:
                pid, status, rusage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self._watched:
                self._watched.discard(pid)
                self._exits[pid] = ChildExit(status, rusage)

    def exited(self, pid: int) -> ChildExit | None:
        self.reap()
        return self._exits.pop(pid, None)
