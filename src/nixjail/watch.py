"""Waiting for a spool directory to change, without polling: inotify.

Every writer of the spool (the API, runners, cache builders, other processes
too) puts a file in place by renaming it there, and takes a job by renaming
it away, so a rename into or out of a watched directory is the one event that
matters. One inotify instance and one thread serve a whole process: a waiter
registers an `Event` for a (directory, name) or a whole directory, and the
thread sets it when that changes. A waiter then re-reads only what changed.

Where inotify is not to be had (its instances used up, an odd filesystem),
a `Change` falls back to waking every `FALLBACK_POLL_S`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import select
import struct
import threading
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_Q_OVERFLOW = 0x00004000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
MASK = IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE | IN_CLOSE_WRITE
EVENT = struct.Struct("iIII")
FALLBACK_POLL_S = 0.25
ANY = ""  # the name that stands for "anything in this directory"


def inotify_events(data: bytes) -> Iterator[tuple[int, int, str]]:
    """(watch descriptor, mask, name) of each event in what one read of an
    inotify descriptor returned."""
    offset = 0
    while offset + EVENT.size <= len(data):
        wd, mask, _cookie, length = EVENT.unpack_from(data, offset)
        raw = data[offset + EVENT.size:offset + EVENT.size + length]
        offset += EVENT.size + length
        yield wd, mask, raw.rstrip(b"\0").decode(errors="replace")


class Watcher:
    """One inotify instance of this process and the thread that reads it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[tuple[str, str], set[threading.Event]] = defaultdict(set)
        self._dirs: dict[int, str] = {}
        self._watched: set[str] = set()
        libc = ctypes.CDLL(None, use_errno=True)
        self._add_watch = libc.inotify_add_watch
        self._add_watch.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            log.warning("no inotify (%s): waiting on the spool polls every %g s",
                        os.strerror(err), FALLBACK_POLL_S)
            self._fd = -1
            return
        self._fd = fd
        threading.Thread(target=self._read, name="spool-watch", daemon=True).start()

    @property
    def available(self) -> bool:
        return self._fd >= 0

    def _watch(self, directory: str) -> bool:
        if directory in self._watched:
            return True
        if not self.available:
            return False
        wd = self._add_watch(self._fd, os.fsencode(directory), MASK)
        if wd < 0:
            log.warning("cannot watch %s: %s", directory, os.strerror(ctypes.get_errno()))
            return False
        self._dirs[wd] = directory
        self._watched.add(directory)
        return True

    @contextlib.contextmanager
    def changes(self, directory: Path, name: str = ANY) -> Iterator[Change]:
        """A `Change` that is set whenever `name` (or, with ANY, anything) in
        `directory` is added, replaced or removed, from the moment this is
        entered: look at the state after entering, then wait on it."""
        key = (str(directory), name)
        event = threading.Event()
        with self._lock:
            watched = self._watch(key[0])
            self._waiters[key].add(event)
        try:
            yield Change(event, polled=not watched)
        finally:
            with self._lock:
                self._waiters[key].discard(event)
                if not self._waiters[key]:
                    del self._waiters[key]

    def _read(self) -> None:
        while True:
            select.select([self._fd], [], [])
            try:
                data = os.read(self._fd, 65536)
            except OSError as exc:
                if exc.errno == errno.EAGAIN:
                    continue
                raise
            self._dispatch(data)

    def _dispatch(self, data: bytes) -> None:
        woken: set[threading.Event] = set()
        with self._lock:
            for wd, mask, name in inotify_events(data):
                if mask & IN_Q_OVERFLOW:  # events were lost: wake everyone
                    woken.update(e for events in self._waiters.values() for e in events)
                    continue
                directory = self._dirs.get(wd)
                if directory is None:
                    continue
                if name.startswith("."):
                    continue  # a temporary file on its way into place
                woken.update(self._waiters.get((directory, name), ()))
                woken.update(self._waiters.get((directory, ANY), ()))
        for event in woken:
            event.set()


class Change:
    """What a waiter waits on; see `Watcher.changes`."""

    def __init__(self, event: threading.Event, *, polled: bool) -> None:
        self._event = event
        self._polled = polled

    def wait(self, timeout_s: float) -> bool:
        """Block until a change (True) or `timeout_s` (False); then look again."""
        if self._polled:
            timeout_s = min(timeout_s, FALLBACK_POLL_S)
        changed = self._event.wait(max(0.0, timeout_s))
        self._event.clear()
        return changed or self._polled


_watcher: Watcher | None = None
_watcher_pid = 0
_watcher_lock = threading.Lock()


def watcher() -> Watcher:
    """This process's watcher, made on first use (again in a forked child,
    which has the parent's instance but not its thread)."""
    global _watcher, _watcher_pid
    with _watcher_lock:
        if _watcher is None or _watcher_pid != os.getpid():
            _watcher = Watcher()
            _watcher_pid = os.getpid()
        return _watcher
