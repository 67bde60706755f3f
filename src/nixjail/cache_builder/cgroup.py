"""One memory cgroup per dependencies job (cgroup v1 or v2).

Everything a job runs goes into it: the jailed Nix client that evaluates the
shell.nix and, with a private nix-daemon, every builder that daemon forks. So
the job's memory limit bounds evaluation and builds together, the kernel's
OOM-kill counter of the cgroup says whether the limit was hit, its peak usage
is the stage's `memory_kib`, and killing its processes stops the whole job,
builds included.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from pathlib import Path

from nixjail.errors import ToolError

CGROUP_ROOT = Path("/sys/fs/cgroup")
DEFAULT_NAME = "nixjail-cache-builder"
KILL_ROUNDS = 100
KILL_PAUSE_S = 0.02


def default_parent() -> Path:
    """Where job cgroups go when the settings name no place."""
    v1 = CGROUP_ROOT / "memory"
    if (v1 / "memory.limit_in_bytes").exists():
        return v1 / DEFAULT_NAME
    return CGROUP_ROOT / DEFAULT_NAME


def _is_v1(directory: Path) -> bool:
    return (directory / "memory.limit_in_bytes").exists()


def usable(parent: Path) -> bool:
    """Whether job cgroups can be made under `parent` (made here if missing)."""
    try:
        parent.mkdir(exist_ok=True)
    except OSError:
        return False
    return _is_v1(parent) or (parent / "memory.max").exists() or (
        (parent / "cgroup.subtree_control").exists()
        and "memory" in (parent / "cgroup.controllers").read_text())


class JobCgroup:
    """A fresh cgroup under `parent` with a memory (and swap) limit."""

    def __init__(self, parent: Path, name: str, limit_bytes: int) -> None:
        self.path = parent / name
        try:
            self.path.mkdir()
        except FileExistsError:
            self.kill_all()
            self.path.rmdir()
            self.path.mkdir()
        except OSError as exc:
            raise ToolError(f"cannot make the cgroup {self.path}: {exc.strerror}") from None
        self.v1 = _is_v1(self.path)
        if self.v1:
            self._write("memory.limit_in_bytes", limit_bytes)
            # Without swap accounting the limit alone applies.
            if (self.path / "memory.memsw.limit_in_bytes").exists():
                self._write("memory.memsw.limit_in_bytes", limit_bytes)
        else:
            self._write("memory.max", limit_bytes)
            if (self.path / "memory.swap.max").exists():
                self._write("memory.swap.max", 0)

    def _write(self, name: str, value: int | str) -> None:
        (self.path / name).write_text(str(value))

    @property
    def procs_file(self) -> Path:
        return self.path / "cgroup.procs"

    def pids(self) -> list[int]:
        try:
            return [int(line) for line in self.procs_file.read_text().split()]
        except FileNotFoundError:
            return []

    def oom_kills(self) -> int:
        """How many processes the kernel killed here for want of memory."""
        name = "memory.oom_control" if self.v1 else "memory.events"
        try:
            for line in (self.path / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except FileNotFoundError:
            pass
        return 0

    def peak_bytes(self) -> int:
        name = "memory.max_usage_in_bytes" if self.v1 else "memory.peak"
        try:
            return int((self.path / name).read_text())
        except (FileNotFoundError, ValueError):
            return 0

    def kill_all(self) -> None:
        """SIGKILL every process in the cgroup until none is left."""
        if not self.v1 and (self.path / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                self._write("cgroup.kill", 1)
        for _ in range(KILL_ROUNDS):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(KILL_PAUSE_S)

    def remove(self) -> None:
        """Kill what is left and remove the cgroup."""
        self.kill_all()
        for _ in range(KILL_ROUNDS):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    raise
                time.sleep(KILL_PAUSE_S)  # the last exits are still being reaped


def sweep(parent: Path, alive: callable) -> list[Path]:
    """Remove job cgroups under `parent` whose owner (the name's `PID-` prefix)
    is no longer alive: what a cache builder that crashed left running."""
    removed = []
    if not parent.is_dir():
        return removed
    for child in parent.iterdir():
        if not child.is_dir():
            continue
        owner, _, _ = child.name.partition("-")
        if not owner.isdigit() or alive(int(owner)):
            continue
        group = JobCgroup.__new__(JobCgroup)
        group.path, group.v1 = child, _is_v1(child)
        with contextlib.suppress(OSError):
            group.remove()
            removed.append(child)
    return removed
