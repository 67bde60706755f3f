"""One memory and pids cgroup per dependencies job (cgroup v1 or v2).

Everything a job runs goes into it: the jailed Nix client that evaluates the
shell.nix and, with a private nix-daemon, every builder that daemon forks. So
the job's memory limit bounds evaluation and builds together, the kernel's
OOM-kill counter of the cgroup says whether the limit was hit, its peak usage
is the stage's `memory_kib`, and killing its processes stops the whole job,
builds included.

The pids limit bounds the job's tasks as the kernel counts them, whichever
user runs them: builders run as build users, where no rlimit of the client
reaches, and a fork bomb in a builder would otherwise take every pid the
host has before the job's kill rounds catch up.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from pathlib import Path

from nixjail.errors import ToolError
from nixjail.jailkit.cgroup import MemoryCgroup

CGROUP_ROOT = Path("/sys/fs/cgroup")
DEFAULT_NAME = "nixjail-cache-builder"
KILL_ROUNDS = 100
KILL_PAUSE_S = 0.02
# Tasks of the job's own machinery beside the stage's `processes`: the private
# nix-daemon and its per-connection worker, the jail's nsjail and the Nix
# client, with their threads (the kernel counts each thread as a task).
JOB_OWN_TASKS = 64


def default_parent() -> Path:
    """Where job cgroups go when the settings name no place: below the unit's
    own cgroup under systemd (the unit has Delegate=yes), so that the unit's
    limits cover the builds and stopping the unit stops them; else a cgroup
    of nixjail's own at the top."""
    own = delegated_cgroup()
    if own is not None:
        return own
    v1 = CGROUP_ROOT / "memory"
    if (v1 / "memory.limit_in_bytes").exists():
        return v1 / DEFAULT_NAME
    return CGROUP_ROOT / DEFAULT_NAME


# On cgroup v2 a cgroup with processes cannot hand controllers to children:
# the cache builder itself moves into this leaf of its unit's cgroup.
SUPERVISOR_LEAF = "supervisor"


def delegated_cgroup() -> Path | None:
    """This process's memory cgroup, when it is a systemd service's.

    systemd names a service's cgroup after the unit and, with Delegate=yes,
    leaves what is below it to the service. `INVOCATION_ID` says systemd
    started this process as a unit.
    """
    if not os.environ.get("INVOCATION_ID"):
        return None
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    memory_v1 = unified = None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            memory_v1 = path
        elif controllers == "":
            unified = path
    if memory_v1 is not None and _is_v1(CGROUP_ROOT / "memory"):
        own = CGROUP_ROOT / "memory" / memory_v1.lstrip("/")
    elif unified is not None and (CGROUP_ROOT / "cgroup.controllers").exists():
        own = CGROUP_ROOT / unified.lstrip("/")
        if own.name == SUPERVISOR_LEAF:
            own = own.parent  # moved there already
        if not own.name.endswith(".service"):
            return None
        try:
            _become_leaf(own)
        except OSError:
            return None
        return own
    else:
        return None
    return own if own.name.endswith(".service") and own.is_dir() else None


def _become_leaf(own: Path) -> None:
    """v2: move this process into a leaf, then let the unit's cgroup give the
    memory controller to the job cgroups beside it."""
    leaf = own / SUPERVISOR_LEAF
    leaf.mkdir(exist_ok=True)
    (leaf / "cgroup.procs").write_text(str(os.getpid()))
    _delegate(own, "memory")
    with contextlib.suppress(OSError):
        _delegate(own, "pids")


def _delegate(own: Path, controller: str) -> None:
    """v2: give `controller` to the cgroups below `own`."""
    enabled = (own / "cgroup.subtree_control").read_text().split()
    if controller not in enabled:
        (own / "cgroup.subtree_control").write_text(f"+{controller}")


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


def _v1_pids_dir(memory_dir: Path) -> Path | None:
    """v1: the pids hierarchy's directory at the same place as a memory one."""
    pids_root = CGROUP_ROOT / "pids"
    if not (pids_root / "cgroup.procs").exists():
        return None
    try:
        relative = memory_dir.relative_to(CGROUP_ROOT / "memory")
    except ValueError:
        return None
    return pids_root / relative


class JobCgroup:
    """A fresh cgroup under `parent` with a memory (and swap) limit and, where
    the kernel has the pids controller, a limit of `max_tasks` tasks."""

    def __init__(self, parent: Path, name: str, limit_bytes: int,
                 max_tasks: int | None = None) -> None:
        self.path = parent / name
        self.v1 = _is_v1(parent)
        self.pids_path = _v1_pids_dir(self.path) if self.v1 else None
        try:
            self._make()
        except OSError as exc:
            raise ToolError(f"cannot make the cgroup {exc.filename}: {exc.strerror}") from None
        if self.v1:
            self._write("memory.limit_in_bytes", limit_bytes)
            # Without swap accounting the limit alone applies.
            if (self.path / "memory.memsw.limit_in_bytes").exists():
                self._write("memory.memsw.limit_in_bytes", limit_bytes)
        else:
            self._write("memory.max", limit_bytes)
            if (self.path / "memory.swap.max").exists():
                self._write("memory.swap.max", 0)
        if max_tasks is not None and self.tasks_limit_file is not None:
            self.tasks_limit_file.write_text(str(max_tasks))

    @classmethod
    def existing(cls, path: Path) -> JobCgroup:
        """The job cgroup at `path`, as a crashed cache builder left it."""
        group = cls.__new__(cls)
        group.path, group.v1 = path, _is_v1(path)
        pids = _v1_pids_dir(path) if group.v1 else None
        group.pids_path = pids if pids is not None and pids.is_dir() else None
        return group

    def _make(self) -> None:
        try:
            self._make_directories()
        except FileExistsError:
            self.remove()  # a job of the same name that a crash left
            self._make_directories()

    def _make_directories(self) -> None:
        self.path.mkdir()
        if self.pids_path is not None:
            self.pids_path.parent.mkdir(parents=True, exist_ok=True)
            self.pids_path.mkdir()

    def _directories(self) -> list[Path]:
        return [self.path] + ([self.pids_path] if self.pids_path is not None else [])

    @property
    def tasks_limit_file(self) -> Path | None:
        """Where the pids limit is written, or None without a pids controller."""
        path = (self.pids_path or self.path) / "pids.max"
        return path if path.exists() else None

    def join_argv(self, argv: list[str]) -> list[str]:
        """`argv` run by a shell that first moves itself into this cgroup (in
        each hierarchy; writing 0 means "this process"), then execs it: so it
        is in before it forks anything."""
        procs = [str(path / "cgroup.procs") for path in self._directories()]
        return ["/bin/sh", "-c",
                'while [ "$1" != -- ]; do echo 0 > "$1" || exit 125; shift; done; '
                'shift; exec "$@"', "join", *procs, "--", *argv]

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

    def written_bytes(self) -> int:
        """What the cgroup's processes sent to disk (the kernel's write_bytes, which
        counts a page when it is dirtied, so at once; tmpfs pages never count). A
        process's figure holds those of the children it reaped."""
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError, ValueError):
                for line in Path(f"/proc/{pid}/io").read_text().splitlines():
                    if line.startswith("write_bytes:"):
                        total += int(line.split()[1])
        return total

    def kill_uids_except(self, kept: set[int]) -> int:
        """SIGKILL the cgroup's processes whose real uid is not in `kept`; how many."""
        killed = 0
        for pid in self.pids():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                uid = int(next(line.split()[1] for line in status.splitlines()
                               if line.startswith("Uid:")))
            except (OSError, ValueError, StopIteration):
                continue
            if uid not in kept:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
        return killed

    @property
    def reader(self) -> MemoryCgroup:
        return MemoryCgroup(self.path, 1 if self.v1 else 2)

    def oom_kills(self) -> int:
        """How many processes the kernel killed here for want of memory."""
        return self.reader.oom_kills() or 0

    def peak_bytes(self) -> int:
        return self.reader.peak_bytes() or 0

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
        """Kill what is left and remove the cgroup (in each hierarchy)."""
        self.kill_all()
        for path in self._directories():
            _rmdir(path)


def _rmdir(path: Path) -> None:
    for _ in range(KILL_ROUNDS):
        try:
            path.rmdir()
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
        group = JobCgroup.existing(child)
        with contextlib.suppress(OSError):
            group.remove()
            removed.append(child)
    return removed
