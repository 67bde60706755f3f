"""What one attack may leave behind, looked at before and after it.

Other cases of this module run beside it on the same stack, and other test
modules on the same host, so every look is narrowed to what can be this
attack's, by its submission id (the runner labels its containers with it;
the cache builder names the job's directory, cgroup and private nix-daemon's
socket after it) or by its nonce (a derivation builder and all it forks carry
the derivation's `nonce` in their environment):

- containers labelled with the submission;
- processes with this serve's mark whose environment or command line holds
  the submission id, and any process that holds the nonce;
- cgroups: dockerd's of the submission's containers (from its own events),
  and the cache builder's job cgroups named after the submission;
- files: new entries of the stack's run dir that hold the submission id or
  the nonce; new entries of the host's /tmp, /var/tmp and /dev/shm that are
  not root's (submitted code never runs as the host's root: the jails map to
  unprivileged uids, builds run as nixbld users, so root's new files there
  are other tests' temporary dirs) or that carry the nonce in their name. A
  non-root leftover there cannot be told apart: it fails the cases that ran
  while it appeared;
- host memory back within MEMORY_SLACK_MIB. The bombs here put 250 MiB or
  more into tmpfs (Shmem), so a bomb whose files outlived it shows there (64
  MiB of slack: other modules' containers' work dirs hold a few MiB each).
  MemAvailable gets 1 GiB: on this shared two-core machine the other worker's
  stacks and builds move it by hundreds of MiB, and a leaked process is caught
  by the process check anyway. Each is waited for, since removal takes a
  moment. Like a non-root file in the host's temporary dirs, memory not given
  back cannot be told apart between the two cases running then: both fail;
- disk, where a submission's bytes can land on it: the stack's own
  directories (spool, state, run dir) and the Nix store (its entries made
  since the attack began, valid or not), grown by at most DISK_SLACK_MIB
  and STORE_SLACK_MIB. The host's free space is no measure: other test modules
  build images and root filesystems beside this one, hundreds of MiB at once.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import docker
from serve_stack import MARK_ENV, Served

from nixjail.docker import LABEL_SUBMISSION

HOST_TMP_DIRS = (Path("/tmp"), Path("/var/tmp"), Path("/dev/shm"))
STORE = Path("/nix/store")
CGROUP_ROOT = Path("/sys/fs/cgroup")
CACHE_BUILDER_CGROUP = CGROUP_ROOT / "memory" / "nixjail-cache-builder"
# Shmem is what tmpfs files hold (a bomb's files outliving its container);
# MemAvailable the whole host's, loosely, as other modules' work moves it.
MEMORY_SLACK_MIB = {"Shmem": 64, "MemAvailable": 1024}
DISK_SLACK_MIB = 64
# New store entries of other modules' builds (the fixture's small packages)
# beside a build that must leave none of its 24 MiB behind.
STORE_SLACK_MIB = 16
SETTLE_S = 30
# The cache builder's lock of one environment key, kept for the next build
# of the same key (nixjail.cache_builder.build.key_lock): the environment's,
# not the attack's.
KEY_LOCK = re.compile(r"builds/[0-9a-f]{64}\.lock")


def _meminfo_mib(name: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1]) // 1024
    raise AssertionError(f"no {name} in /proc/meminfo")


def _used_mib(directories: tuple[Path, ...]) -> int:
    """What `directories` (or files) and all under them take on disk (links not followed)."""
    blocks = 0
    for directory in directories:
        with contextlib.suppress(OSError):
            blocks += os.lstat(directory).st_blocks  # a file, or the directory itself
        for root, dirs, files in os.walk(directory):
            for name in dirs + files:
                with contextlib.suppress(OSError):
                    blocks += os.lstat(os.path.join(root, name)).st_blocks
    return blocks * 512 // (1 << 20)


def _store_entries() -> set[str]:
    return set(os.listdir(STORE))


def _new_store_mib(before: set[str]) -> int:
    """What the store's entries made since `before` take on disk, valid or not
    (Nix leaves a failed build's outputs there unregistered)."""
    return _used_mib(tuple(STORE / name for name in _store_entries() - before))


def _processes(needles: list[bytes], also: list[str] | None = None) -> dict[int, str]:
    """pid → command line of every process whose environment or command line
    holds one of `needles` and, when `also` is given, one of those too."""
    found = {}
    wanted = [tag.encode() for tag in also] if also is not None else None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            text = (entry / "environ").read_bytes() + b"\0" + (entry / "cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile, or a kernel thread
        if any(needle in text for needle in needles) and (
                wanted is None or any(tag in text for tag in wanted)):
            found[int(entry.name)] = _cmdline(entry / "cmdline")
    return found


def _cmdline(path: Path) -> str:
    try:
        return path.read_bytes().replace(b"\0", b" ").decode(errors="replace")[:200]
    except OSError:
        return "?"


def _owned_entries(directory: Path) -> dict[str, int]:
    entries = {}
    try:
        with os.scandir(directory) as scan:
            for entry in scan:
                try:
                    entries[entry.name] = entry.stat(follow_symlinks=False).st_uid
                except OSError:
                    continue
    except OSError:
        pass
    return entries


def _tree(directory: Path) -> set[str]:
    # os.walk, not rglob: other cases' job dirs come and go meanwhile, and
    # rglob raises FileNotFoundError for one that vanished mid-walk.
    return {os.path.relpath(os.path.join(root, name), directory)
            for root, dirs, files in os.walk(directory) for name in dirs + files}


def _docker_cgroups(container_id: str) -> list[str]:
    return [str(path) for path in CGROUP_ROOT.glob(f"*/docker/{container_id}*")]


@dataclass
class Snapshot:
    nonce: str
    mark: bytes
    started: float
    parts: dict[str, tuple[int, int]]
    host_entries: dict[Path, set[str]]
    run_tree: set[str]
    builder_cgroups: set[str]
    memory_mib: dict[str, int]
    stack_dirs: tuple[Path, ...]
    stack_used_mib: int
    store_entries: set[str]

    @classmethod
    def take(cls, served: Served, nonce: str) -> Snapshot:
        parts = {name: (part.get("pid"), part.get("restarts", 0))
                 for name, part in served.parts().items()}
        mark = f"{MARK_ENV}={served.mark}".encode()
        return cls(
            nonce=nonce, mark=mark, started=time.time(), parts=parts,
            host_entries={d: set(_owned_entries(d)) for d in HOST_TMP_DIRS},
            run_tree=_tree(served.run_dir),
            builder_cgroups=set(os.listdir(CACHE_BUILDER_CGROUP))
            if CACHE_BUILDER_CGROUP.is_dir() else set(),
            memory_mib={name: _meminfo_mib(name) for name in MEMORY_SLACK_MIB},
            stack_dirs=(served.base, served.run_dir),
            stack_used_mib=_used_mib((served.base, served.run_dir)),
            store_entries=_store_entries())

    def left_behind(self, served: Served, submission_id: str | None) -> list[str]:
        """Everything of the attack still there once it had time to go; a
        submission the API refused (`submission_id` None) has only its nonce."""
        client = docker.from_env()
        tags = [self.nonce] + ([submission_id] if submission_id else [])
        label = f"{LABEL_SUBMISSION}={submission_id or self.nonce}"
        checks = {
            # A warm pool's container carries no submission label: its name tells.
            "containers": lambda: _container_names(client, {"label": label}) + (
                _container_names(client, {"name": f"^/?nixjail-{submission_id}-"})
                if submission_id else []),
            "processes": lambda: self._processes(served, tags),
            "cgroups": lambda: self._cgroups(client, label, tags),
            "files": lambda: self._files(served, tags),
            "memory": self._memory,
            "disk": self._disk,
        }
        deadline = time.monotonic() + SETTLE_S
        left = {}
        for what, check in checks.items():
            while (found := check()) and time.monotonic() < deadline:
                time.sleep(0.2)
            if found:
                left[what] = found
        problems = [f"left behind ({what}): {found}" for what, found in left.items()]
        parts = {name: (part.get("pid"), part.get("restarts", 0))
                 for name, part in served.parts().items()}
        if parts != self.parts:
            problems.append(f"a part of serve was restarted: {self.parts} -> {parts}")
        return problems

    def _processes(self, served: Served, tags: list[str]) -> list[str]:
        found = _processes([self.nonce.encode()])
        found.update({pid: cmd for pid, cmd in _processes([self.mark], tags[1:]).items()
                      if pid != served.process.pid})
        return [f"{pid}: {cmd}" for pid, cmd in found.items()]

    def _cgroups(self, client: docker.DockerClient, label: str, tags: list[str]) -> list[str]:
        events = client.events(since=int(self.started) - 1, until=int(time.time()) + 1,
                               decode=True, filters={"label": label, "event": "create"})
        ids = {event.get("id") or event.get("Actor", {}).get("ID") for event in events}
        left = [path for cid in ids if cid for path in _docker_cgroups(cid)]
        if CACHE_BUILDER_CGROUP.is_dir():
            left += [str(CACHE_BUILDER_CGROUP / name) for name in
                     set(os.listdir(CACHE_BUILDER_CGROUP)) - self.builder_cgroups
                     if any(tag in name for tag in tags)
                     and (CACHE_BUILDER_CGROUP / name).is_dir()]
        return left

    def _files(self, served: Served, tags: list[str]) -> list[str]:
        left = []
        for directory, before in self.host_entries.items():
            for name, uid in _owned_entries(directory).items():
                if name not in before and (uid != 0 or self.nonce in name):
                    left.append(f"{directory / name} (uid {uid})")
        left += [str(served.run_dir / name) for name in _tree(served.run_dir) - self.run_tree
                 if any(tag in name for tag in tags) and not KEY_LOCK.fullmatch(name)]
        return left

    def _memory(self) -> list[str]:
        problems = []
        for name, slack in MEMORY_SLACK_MIB.items():
            now, before = _meminfo_mib(name), self.memory_mib[name]
            grown = before - now if name == "MemAvailable" else now - before
            if grown > slack:
                problems.append(f"{name} {now} MiB, {before} MiB before")
        return problems

    def _disk(self) -> list[str]:
        problems = []
        if (used := _used_mib(self.stack_dirs)) > self.stack_used_mib + DISK_SLACK_MIB:
            problems.append(f"the stack's directories hold {used} MiB, "
                            f"{self.stack_used_mib} MiB before")
        if (stored := _new_store_mib(self.store_entries)) > STORE_SLACK_MIB:
            problems.append(f"{stored} MiB in store entries made since the attack began")
        return problems


def _container_names(client: docker.DockerClient, filters: dict) -> list[str]:
    # Sparse: a container removed between the listing and a look at it (the
    # runner removes it once the submission's end is recorded) is no error.
    return [name.lstrip("/") for container in client.containers.list(
        all=True, sparse=True, filters=filters) for name in container.attrs.get("Names", [])[:1]]
