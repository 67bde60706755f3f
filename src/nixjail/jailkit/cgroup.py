"""Readers of a cgroup's memory and CPU figures (cgroup v1 or v2); they never write.

Container init reads its container's cgroup (Docker mounts it read-only at
/sys/fs/cgroup, showing the container's own subtree) around and during each
stage; the cache builder reads the job cgroups it made.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
# Kernels report "no limit" as a huge number (v1) or "max" (v2).
UNLIMITED = 1 << 60


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _keyed(text: str | None, key: str) -> int | None:
    """The value of `key` in a flat keyed file (memory.stat, cpu.stat, memory.events)."""
    for line in (text or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return None


def _number(text: str | None) -> int | None:
    return int(text) if text is not None and text.strip().isdigit() else None


@dataclass(frozen=True)
class MemoryCgroup:
    directory: Path
    version: int

    def oom_kills(self) -> int | None:
        """The cgroup's OOM kill counter, or None when it cannot be read."""
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        return _keyed(_read(self.directory / name), "oom_kill")

    def usage_bytes(self) -> int | None:
        """Memory the cgroup holds now (page cache and tmpfs files included)."""
        name = "memory.usage_in_bytes" if self.version == 1 else "memory.current"
        return _number(_read(self.directory / name))

    def peak_bytes(self) -> int | None:
        """The highest usage since the cgroup was made."""
        name = "memory.max_usage_in_bytes" if self.version == 1 else "memory.peak"
        return _number(_read(self.directory / name))

    def anon_bytes(self) -> int | None:
        """Anonymous memory: what its processes hold themselves, no file or tmpfs page."""
        return _keyed(_read(self.directory / "memory.stat"),
                      "total_rss" if self.version == 1 else "anon")

    def resident_bytes(self) -> int | None:
        """Anonymous and shared (tmpfs, shm) memory: what its processes hold, no cache."""
        stat = _read(self.directory / "memory.stat")
        anon = _keyed(stat, "total_rss" if self.version == 1 else "anon")
        shmem = _keyed(stat, "total_shmem" if self.version == 1 else "shmem")
        return None if anon is None else anon + (shmem or 0)

    def limit_bytes(self) -> int | None:
        """The cgroup's memory limit, or None when unlimited or unreadable."""
        name = "memory.limit_in_bytes" if self.version == 1 else "memory.max"
        value = _number(_read(self.directory / name))
        return value if value is not None and value < UNLIMITED else None


@dataclass(frozen=True)
class CpuCgroup:
    directory: Path
    version: int

    def usage_ns(self) -> int | None:
        """CPU time of every process the cgroup ever held, in nanoseconds."""
        if self.version == 1:
            return _number(_read(self.directory / "cpuacct.usage"))
        usec = _keyed(_read(self.directory / "cpu.stat"), "usage_usec")
        return None if usec is None else usec * 1000


def _own_directory(controller: str, marker: str,
                   proc_cgroup: Path = Path("/proc/self/cgroup")) -> tuple[Path, int] | None:
    """This process's cgroup directory of one controller, and the cgroup version."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    mounts: list[Path] = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        names = controllers.split(",")
        if controller in names:
            version = 1
            mounts = [CGROUP_ROOT / name for name in (controllers, controller, "cpu,cpuacct")]
            break
    else:
        if not (CGROUP_ROOT / "cgroup.controllers").exists():
            return None
        path = next((line.split(":", 2)[2] for line in lines if line.startswith("0::")), "/")
        version, mounts = 2, [CGROUP_ROOT]
    # In a container the cgroup path names the host's hierarchy while the mount shows
    # only the container's own subtree, so fall back to the mount's root.
    for mount in mounts:
        for candidate in (mount / path.lstrip("/"), mount):
            if (candidate / marker).exists():
                return candidate, version
    return None


def own_memory_cgroup(proc_cgroup: Path = Path("/proc/self/cgroup")) -> MemoryCgroup | None:
    """This process's memory cgroup (v1 or v2), or None."""
    found = _own_directory("memory", "memory.stat", proc_cgroup)
    return MemoryCgroup(*found) if found else None


def own_cpu_cgroup(proc_cgroup: Path = Path("/proc/self/cgroup")) -> CpuCgroup | None:
    """This process's CPU accounting cgroup (v1 cpuacct, v2 cpu.stat), or None."""
    v1 = _own_directory("cpuacct", "cpuacct.usage", proc_cgroup)
    if v1 and v1[1] == 1:
        return CpuCgroup(*v1)
    found = v1 or _own_directory("cpu", "cpu.stat", proc_cgroup)
    return CpuCgroup(*found) if found and found[1] == 2 else None
