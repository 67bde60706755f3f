"""One dependencies job: key → lock → (cached | jailed build) → store → roots → publish.

The environment's key is the hash of the shell.nix text and of the nixpkgs it
is evaluated with. Identical environments asked for at once are built once: a
per-key `flock` serialises them, and whoever gets the lock second finds the
key's GC roots valid and reports `cached`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import platform
import shutil
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from nixjail import nix
from nixjail.cache_builder import cgroup as cg
from nixjail.cache_builder.jail import JailConfig, prepare_job_dir, run_jail
from nixjail.errors import LeaseLost, ToolError
from nixjail.models import Environment, ResolvedLimits, StageResult, StageStatus
from nixjail.settings import Settings

log = logging.getLogger(__name__)

KEY_VERSION = "nixjail-environment-v1"
ENV_SCRIPT_NAME = "nixjail-env.sh"
LOCK_POLL_S = 0.05
DAEMON_START_S = 10.0
# What a private nix-daemon and nsjail hold beside the job itself.
DAEMON_MEMORY_MIB = 32


@dataclass
class BuilderConfig:
    """What building needs from the settings, resolved once per process."""

    jail: JailConfig
    roots_dir: Path
    work_dir: Path  # per-job directories and the per-key locks
    publish_to: str | None = None
    publish_timeout_s: float = 600
    private_daemon: bool = True
    cgroup_parent: Path | None = None  # None: no memory cgroup on this host
    store: str = "auto"
    nixpkgs_identity: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> BuilderConfig:
        cb = settings.cache_builder
        private = cb.daemon == "private"
        work_dir = settings.run_dir / "builds"
        parent = cb.cgroup_dir or cg.default_parent()
        config = cls(
            jail=JailConfig(
                nsjail=cb.nsjail, outside_uid=cb.jail_uid, outside_gid=cb.jail_gid,
                # With a private daemon, each job gets a socket directory of its own.
                daemon_socket_dir=cb.host_daemon_socket,
                nixpkgs=Path(os.path.realpath(cb.nixpkgs)) if cb.nixpkgs else None,
                allowed_uris=list(cb.allowed_uris)),
            roots_dir=cb.roots_dir, work_dir=work_dir,
            publish_to=cb.publish_to, publish_timeout_s=cb.publish_timeout_s,
            private_daemon=private,
            cgroup_parent=parent if cg.usable(parent) else None)
        config.nixpkgs_identity = nixpkgs_identity(config.jail.nixpkgs)
        return config


@dataclass
class BuildOutcome:
    result: StageResult
    environment: Environment | None = None


def nixpkgs_identity(nixpkgs: Path | None) -> str:
    """What identifies the nixpkgs a shell.nix is evaluated with.

    A store path names its content already; any other directory is hashed,
    so editing it makes new keys.
    """
    if nixpkgs is None:
        return "none"
    if str(nixpkgs).startswith("/nix/store/"):
        return str(nixpkgs)
    return f"{nixpkgs}:{nix.hash_path(nixpkgs)}"


def environment_key(shell_nix: str, identity: str) -> str:
    material = json.dumps({"version": KEY_VERSION, "shell_nix": shell_nix,
                           "nixpkgs": identity, "machine": platform.machine()},
                          sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()


def root_paths(roots_dir: Path, key: str) -> tuple[Path, Path]:
    return roots_dir / f"{key}-inputs", roots_dir / f"{key}-script"


@contextlib.contextmanager
def key_lock(work_dir: Path, key: str, should_stop: Callable[[], bool]) -> Iterator[None]:
    """Hold the build of `key`; wait (without blocking the lease keeper) for
    another job of the same key to finish first."""
    work_dir.mkdir(parents=True, exist_ok=True)
    with open(work_dir / f"{key}.lock", "a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if should_stop():
                    raise LeaseLost("the lease was lost while waiting for the same "
                                    "environment's build") from None
                time.sleep(LOCK_POLL_S)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def existing_environment(config: BuilderConfig, key: str) -> Environment | None:
    """The environment of `key` when its roots lead to valid paths; the roots
    are re-added, which renews their age for the garbage collector."""
    inputs_root, script_root = root_paths(config.roots_dir, key)
    inputs, script = nix.root_target(inputs_root), nix.root_target(script_root)
    if inputs is None or script is None:
        return None
    try:
        nix.add_gc_root(config.store, inputs, inputs_root)
        nix.add_gc_root(config.store, script, script_root)
    except ToolError:
        return None  # collected since: build again
    return Environment(key=key, inputs=inputs, script=script)


def publish(config: BuilderConfig, environment: Environment) -> None:
    if config.publish_to:
        nix.copy_to(config.publish_to, [environment.inputs, environment.script],
                    store=config.store, timeout_s=config.publish_timeout_s)


def build_environment(config: BuilderConfig, shell_nix: str, limits: ResolvedLimits, *,
                      job_name: str, should_stop: Callable[[], bool] = lambda: False,
                      ) -> BuildOutcome:
    """Build (or find) the environment of `shell_nix` under `limits`.

    A failure of the submission's own making is a result (`nonzero_exit`,
    `time_limit`, `memory_limit`, …); a failure of the cache builder itself
    raises ToolError, and LeaseLost when `should_stop` says the job is gone.
    """
    key = environment_key(shell_nix, config.nixpkgs_identity)
    started = time.monotonic()
    with key_lock(config.work_dir, key, should_stop):
        environment = existing_environment(config, key)
        if environment is not None:
            publish(config, environment)
            return BuildOutcome(StageResult(
                status=StageStatus.ok, cached=True,
                stdout=f"inputs: {environment.inputs}\n",
                stderr=f"the environment {key} was built before: nothing to build\n",
                wall_time_ms=int((time.monotonic() - started) * 1000)), environment)
        return _build(config, key, shell_nix, limits, job_name, should_stop)


def _build(config: BuilderConfig, key: str, shell_nix: str, limits: ResolvedLimits,
           job_name: str, should_stop: Callable[[], bool]) -> BuildOutcome:
    job_dir = config.work_dir / f"{os.getpid()}-{job_name}"
    if job_dir.exists():
        shutil.rmtree(job_dir)
    jail = config.jail
    group = None
    daemon = None
    try:
        prepare_job_dir(job_dir, shell_nix, jail)
        if config.cgroup_parent is not None:
            extra = DAEMON_MEMORY_MIB if config.private_daemon else 0
            group = cg.JobCgroup(config.cgroup_parent, job_dir.name,
                                 (limits.memory_mib + extra) * 1024 * 1024)
        if config.private_daemon:
            daemon = _start_daemon(job_dir, group)
            jail = replace(jail, daemon_socket_dir=job_dir / "daemon")
        since = int(time.time())
        run = run_jail(jail, job_dir, limits, cgroup=group, should_stop=should_stop)
        if run.killed_for is StageStatus.error:
            raise LeaseLost(f"the lease on {job_name} was lost during its build")
        result = run.result
        if result.status is not StageStatus.ok:
            return BuildOutcome(result)
        inputs, script_text = _read_outputs(run.out_dir)
        if not inputs or not nix.valid_paths(config.store, [inputs]):
            raise ToolError(f"the build of {key} reported no valid inputs path ({inputs!r})")
        if not script_text.strip():
            raise ToolError(f"nix print-dev-env printed no environment script for {key}")
        times = nix.closure_registration_times(config.store, [inputs])
        result.cached = all(t < since for t in times.values())
        script = nix.add_text(config.store, ENV_SCRIPT_NAME, script_text)
        environment = Environment(key=key, inputs=inputs, script=script)
        inputs_root, script_root = root_paths(config.roots_dir, key)
        nix.add_gc_root(config.store, inputs, inputs_root)
        nix.add_gc_root(config.store, script, script_root)
        publish(config, environment)
        return BuildOutcome(result, environment)
    finally:
        if daemon is not None:
            _stop_daemon(daemon, job_dir)
        if group is not None:
            group.remove()
        shutil.rmtree(job_dir, ignore_errors=True)


def _read_outputs(out_dir: Path) -> tuple[str, str]:
    """What the jailed client left: the inputs path and the script's text.

    Files written by the jail are read without following links, so a link to
    a host file cannot stand in for them.
    """
    def read(name: str, limit: int) -> str:
        try:
            fd = os.open(out_dir / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return ""
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return ""  # a FIFO or device would not be a result
            return handle.read(limit).decode("utf-8", "replace")

    inputs = read("inputs", 4096).strip()
    return (inputs if nix.STORE_PATH_RE.match(inputs) else ""), read("env.sh", 64 << 20)


# -- a private nix-daemon for the job ----------------------------------------------


def _start_daemon(job_dir: Path, group: cg.JobCgroup | None) -> subprocess.Popen:
    """A nix-daemon of this job alone, on the host store, in the job's cgroup.

    Every build it runs for the jailed client forks from it, so the builds
    count against the job's memory limit and die with the job.
    """
    socket_dir = job_dir / "daemon"
    socket_dir.mkdir(mode=0o755)
    env = {name: value for name, value in os.environ.items()
           if name not in ("NIX_REMOTE", "NIX_PATH", "LISTEN_FDS", "LISTEN_PID",
                           "LISTEN_FDNAMES", "NOTIFY_SOCKET", "NIX_DAEMON_SOCKET_PATH")}
    env["NIX_DAEMON_SOCKET_PATH"] = str(socket_dir / "socket")
    # Build directories go into the job's directory, so those of builds that
    # were killed with the job are removed with it.
    build_tmp = job_dir / "tmp"
    build_tmp.mkdir(mode=0o711)
    env["TMPDIR"] = str(build_tmp)
    daemon = shutil.which("nix-daemon")
    if daemon is None:
        raise ToolError("nix-daemon is not installed on this cache builder")
    argv = [daemon]
    if group is not None:
        # Joins the cgroup before it can fork a builder: it forks only on a
        # connection, and the jail connects after the socket appears.
        argv = ["/bin/sh", "-c", 'echo 0 > "$0" && exec "$@"', str(group.procs_file), *argv]
    log_file = open(job_dir / "daemon.log", "wb")  # noqa: SIM115 (closed with the daemon)
    try:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log_file,
                                stderr=log_file, start_new_session=True)
    finally:
        log_file.close()
    deadline = time.monotonic() + DAEMON_START_S
    while not (socket_dir / "socket").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop_daemon(proc, job_dir)
            raise ToolError("the job's nix-daemon did not start: "
                            + (job_dir / "daemon.log").read_text(errors="replace")[-500:])
        time.sleep(0.005)
    return proc


def _stop_daemon(proc: subprocess.Popen, job_dir: Path) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    with contextlib.suppress(FileNotFoundError):
        text = (job_dir / "daemon.log").read_text(errors="replace").strip()
        if text:
            log.debug("nix-daemon of %s: %s", job_dir.name, text[-2000:])
