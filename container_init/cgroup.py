"""The memory cgroup that holds container init (the container's, set by the runner).

Read only: init never writes to cgroups. The runner sets the memory limit per stage
through Docker; init reads the OOM kill counter around each stage to tell a memory kill.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
# Kernels report "no limit" as a huge number (v1) or "max" (v2).
UNLIMITED = 1 << 60


@dataclass(frozen=True)
class MemoryCgroup:
    directory: Path
    version: int

    def _read(self, name: str) -> str | None:
        try:
            return (self.directory / name).read_text()
        except OSError:
            return None

    def oom_kills(self) -> int | None:
        """The cgroup's OOM kill counter, or None when it cannot be read."""
        text = self._read("memory.oom_control" if self.version == 1 else "memory.events")
        if text is None:
            return None
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return None

    def usage_bytes(self) -> int | None:
        """Memory the container holds now (its tmpfs files included)."""
        text = self._read("memory.usage_in_bytes" if self.version == 1 else "memory.current")
        return int(text) if text is not None and text.strip().isdigit() else None

    def limit_bytes(self) -> int | None:
        """The cgroup's memory limit, or None when unlimited or unreadable."""
        text = self._read("memory.limit_in_bytes" if self.version == 1 else "memory.max")
        if text is None or text.strip() == "max":
            return None
        value = int(text)
        return value if value < UNLIMITED else None


def own_memory_cgroup(proc_cgroup: Path = Path("/proc/self/cgroup")) -> MemoryCgroup | None:
    """Find this process's memory cgroup directory (v1 or v2)."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            version, mount = 1, CGROUP_ROOT / "memory"
            break
    else:
        if not (CGROUP_ROOT / "cgroup.controllers").exists():
            return None
        path = next((line.split(":", 2)[2] for line in lines if line.startswith("0::")), "/")
        version, mount = 2, CGROUP_ROOT
    # In a container the cgroup path names the host's hierarchy while the mount shows
    # only the container's own subtree, so fall back to the mount's root.
    for candidate in (mount / path.lstrip("/"), mount):
        marker = "memory.oom_control" if version == 1 else "memory.events"
        if (candidate / marker).exists():
            return MemoryCgroup(candidate, version)
    return None
