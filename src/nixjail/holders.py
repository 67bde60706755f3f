"""Whether the holder of a lease still runs: the question the expiry pass asks.

A holder string names who took a lease: `NAME/PID`, where NAME is the
runner's name (`NIXJAIL_RUNNER_NAME`, else the host name) and PID its process,
optionally followed by `/INVOCATION`, the id systemd gives each start of a
unit (`$INVOCATION_ID`, 32 hex digits). `holder()` builds one for this process.

A holder counts as gone only when this host can tell for sure:

- with an invocation id, and systemd reachable on the system bus (pydbus):
  gone once systemd no longer knows that invocation
  (`Manager.GetUnitByInvocationID`) or its unit is inactive or failed. A unit
  that restarts gets a new invocation id, so the leases of its previous
  process are gone even if a new process has the old PID.
- otherwise: gone when its PID does not exist (`kill(pid, 0)`).

A holder on another host (NAME is not one of this host's names), one in a
format this module does not know, and any failure to ask count as alive: the
lease's deadline alone decides then. A false "gone" would run a submission
twice; a false "alive" only waits for the deadline.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RUNNER_NAME_ENV = "NIXJAIL_RUNNER_NAME"
BUILDER_NAME_ENV = "NIXJAIL_CACHE_BUILDER_NAME"
SYSTEM_BUS_ENV = "DBUS_SYSTEM_BUS_ADDRESS"
DEFAULT_SYSTEM_BUS = "unix:path=/run/dbus/system_bus_socket"
SYSTEMD = "org.freedesktop.systemd1"
NO_INVOCATION_ERROR = "org.freedesktop.systemd1.NoUnitForInvocationID"
# Seconds for one D-Bus call; a systemd that does not answer by then leaves
# the decision to the deadline.
DBUS_TIMEOUT_S = 5.0
ENDED_STATES = frozenset({"inactive", "failed"})

_HOLDER = re.compile(r"(?P<name>[^/]+)/(?P<pid>[1-9][0-9]{0,9})(?:/(?P<invocation>[0-9a-f]{32}))?")


@dataclass(frozen=True)
class Holder:
    name: str
    pid: int
    invocation: str | None = None

    def __str__(self) -> str:
        tail = f"/{self.invocation}" if self.invocation else ""
        return f"{self.name}/{self.pid}{tail}"


def parse_holder(holder: str) -> Holder | None:
    """The parts of a `NAME/PID[/INVOCATION]` holder; None for any other form."""
    match = _HOLDER.fullmatch(holder)
    if match is None:
        return None
    return Holder(match["name"], int(match["pid"]), match["invocation"])


def holder(name: str) -> str:
    """The holder string for this process, with its unit's invocation when
    systemd started it."""
    invocation = os.environ.get("INVOCATION_ID", "").lower()
    if not re.fullmatch(r"[0-9a-f]{32}", invocation):
        invocation = ""
    return str(Holder(name, os.getpid(), invocation or None))


def runner_name() -> str:
    """The name this host's runner leases under."""
    return os.environ.get(RUNNER_NAME_ENV) or socket.gethostname()


def builder_name() -> str:
    """The name this host's cache builder leases under. Not the bare host
    name: a starting runner gives back every lease of `RUNNER_NAME/…`."""
    return os.environ.get(BUILDER_NAME_ENV) or f"cache-builder@{socket.gethostname()}"


def local_names() -> frozenset[str]:
    """The names this host's runner and cache builder take."""
    return frozenset({socket.gethostname(), runner_name(), builder_name()})


class Systemd:
    """The systemd manager on a D-Bus system bus, for the one question asked here."""

    def __init__(self, bus: Any) -> None:
        self.bus = bus
        self.manager = bus.get(SYSTEMD, "/org/freedesktop/systemd1", timeout=DBUS_TIMEOUT_S)

    @classmethod
    def connect(cls, address: str | None = None) -> Systemd | None:
        """systemd on the system bus (`address`, else $DBUS_SYSTEM_BUS_ADDRESS,
        else the standard socket); None without pydbus, bus or systemd."""
        address = address or os.environ.get(SYSTEM_BUS_ENV) or DEFAULT_SYSTEM_BUS
        try:
            import pydbus
        except ImportError:
            return None
        try:
            return cls(pydbus.connect(address))
        except Exception as exc:  # GLib.Error and whatever a broken bus raises
            log.debug("no systemd on %s: %s", address, exc)
            return None

    def invocation_running(self, invocation: str) -> bool:
        """Whether the unit invocation `invocation` (32 hex digits) still runs."""
        from gi.repository import Gio, GLib

        try:
            path = self.manager.GetUnitByInvocationID(bytes.fromhex(invocation),
                                                      timeout=DBUS_TIMEOUT_S)
        except GLib.Error as exc:
            if Gio.DBusError.get_remote_error(exc) == NO_INVOCATION_ERROR:
                return False  # over, and its unit unloaded
            raise
        unit = self.bus.get(SYSTEMD, path, timeout=DBUS_TIMEOUT_S)
        return unit["org.freedesktop.systemd1.Unit"].ActiveState not in ENDED_STATES

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.bus.con.close_sync(None)


def pid_exists(pid: int) -> bool:
    """Whether a process `pid` runs; a zombie (dead, not yet reaped by an init
    that is slow to) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc to ask: kill() said it exists
    # The state follows the command name, which is in parentheses and may hold any.
    return stat[stat.rfind(")") + 2:][:1] != "Z"


def holder_alive(holder: str, *, systemd: Systemd | None = None,
                 names: Iterable[str] | None = None) -> bool:
    """Whether the lease holder `holder` may still run; never raises."""
    try:
        parsed = parse_holder(holder)
        if parsed is None:
            return True
        if parsed.name not in (local_names() if names is None else frozenset(names)):
            return True  # another host's: its deadline decides
        if parsed.invocation and systemd is not None:
            return systemd.invocation_running(parsed.invocation)
        return pid_exists(parsed.pid)
    except Exception as exc:
        log.warning("cannot tell whether lease holder %s runs: %s", holder, exc)
        return True


def systemd_holder_alive(address: str | None = None) -> Callable[[str], bool] | None:
    """A `holder_alive` that asks systemd, when systemd is reachable (pydbus
    importable, a system bus with systemd on it); None otherwise."""
    systemd = Systemd.connect(address)
    if systemd is None:
        return None
    names = local_names()
    return lambda holder: holder_alive(holder, systemd=systemd, names=names)
