"""The nsjail command line of one stage: the jail kit's common part plus the stage's mounts.

What a stage's jail sees is decided in one place, JailSpec.mounts, which container
init fills (nixjail_init.py); this module adds only the stage's own directories
(/etc, the work dir, init's scripts, a /tmp) around them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from jailkit.nsjail import Bind, Identity, JailLimits, Mount, Symlink, Tmpfs, nsjail_argv

from protocol import Limits

__all__ = ["Bind", "JailSpec", "Mount", "Symlink", "Tmpfs", "nsjail_command"]

JAIL_UID = 1000
JAIL_GID = 1000
JAIL_HOME = "/work"
JAIL_TOOLS = "/nixjail"  # init's scripts for the stage, read-only inside
JAIL_OUT = "/nixjail-out"  # written by the dependencies stage only
# The image's directories that bash and nix need; mounted read-only when present, only
# where the image's own tools must run (the dependencies stage of kind "build", which
# runs the image's nix, and kind "none"). Compile and run jails get nixjail's static
# bash and /usr/bin/env instead (see docs/container-init.md).
SYSTEM_DIRS = ("/bin", "/usr", "/lib", "/lib64", "/lib32", "/libx32")


@dataclass
class JailSpec:
    """Everything one nsjail run needs besides the command."""

    nsjail: str
    limits: Limits
    work_dir: Path
    tools_dir: Path
    etc_dir: Path
    log_fd: int
    outside_uid: int
    outside_gid: int
    memory_cgroup_limited: bool
    env: dict[str, str] = field(default_factory=dict)
    # What the jail sees besides its own /etc, work dir, scripts and /tmp, in order.
    mounts: list[Mount] = field(default_factory=list)
    # Whether the image's SYSTEM_DIRS are bound in.
    system_dirs: bool = True


def stage_mounts(spec: JailSpec) -> list[Mount]:
    """The stage's view: system dirs (if wanted), /etc, /tmp, work dir, scripts, spec.mounts."""
    mounts: list[Mount] = [Bind(d, d) for d in SYSTEM_DIRS
                           if spec.system_dirs and os.path.exists(d)]
    mounts += [
        Bind(str(spec.etc_dir), "/etc"),
        # tmpfs pages are charged to the memory cgroup too, so the memory limit bounds /tmp.
        Tmpfs("/tmp", spec.limits.memory_mib * 1024 * 1024),
        Bind(str(spec.work_dir), JAIL_HOME, writable=True),
        Bind(str(spec.tools_dir), JAIL_TOOLS),
    ]
    return mounts + spec.mounts


def nsjail_command(spec: JailSpec, command: list[str]) -> list[str]:
    limits = spec.limits
    return nsjail_argv(
        spec.nsjail,
        identity=Identity(JAIL_UID, JAIL_GID, spec.outside_uid, spec.outside_gid),
        limits=JailLimits(
            wall_time_s=limits.wall_time_s,
            cpu_time_s=limits.cpu_time_s,
            memory_mib=limits.memory_mib,
            processes=limits.processes,
            address_space_limited=not spec.memory_cgroup_limited,
        ),
        cwd=JAIL_HOME,
        mounts=stage_mounts(spec),
        env=spec.env,
        command=command,
        log=spec.log_fd,
    )
