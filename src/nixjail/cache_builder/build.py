"""One dependencies job: key → lock → (cached | jailed build) → store → roots → publish.

The environment's key is the hash of the shell.nix text and of the nixpkgs it
is evaluated with. Identical environments asked for at once are built once: a
per-key `flock` serialises them, and whoever gets the lock second finds the
key's GC roots valid and reports `cached`.

With a private daemon (the default), every derivation of the job is built by a
nix-daemon of the job alone, whatever the host's nix.conf says (DAEMON_OPTIONS):
in the Nix sandbox, never without it; under the daemon seccomp policy, which
each builder inherits; in the job's memory cgroup; with its build directories
on a tmpfs of the job's, as large as its memory limit. What a build leaves
(that tmpfs, the sandbox's chroot in the store) goes with the job.
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
from dataclasses import dataclass, field, replace
from pathlib import Path

from nixjail import nix
from nixjail.cache_builder import cgroup as cg
from nixjail.cache_builder.jail import JailConfig, prepare_job_dir, run_jail
from nixjail.errors import LeaseLost, ToolError
from nixjail.jailkit.seccomp import DAEMON_POLICY
from nixjail.models import Environment, ResolvedLimits, StageResult, StageStatus
from nixjail.settings import Settings

log = logging.getLogger(__name__)

KEY_VERSION = "nixjail-environment-v1"
ENV_SCRIPT_NAME = "nixjail-env.sh"
LOCK_POLL_S = 0.05
DAEMON_START_S = 10.0
# What a private nix-daemon and nsjail hold beside the job itself.
DAEMON_MEMORY_MIB = 32
DAEMON_STOP_S = 5.0
LOG_SIZE_FACTOR = 4
LOG_SIZE_SLACK = 1 << 20
# The job's daemon's settings that no nix.conf of the host can loosen. Each
# build runs in the Nix sandbox (its own mount, PID, network, IPC and UTS
# namespaces: no host process, file or loopback service) or not at all, and no
# client of the daemon may change that. With them: `sandbox-dev-shm-size`,
# `max-build-log-size` (daemon_options) and `extra-sandbox-paths`.
DAEMON_OPTIONS = {
    "sandbox": "true",
    "sandbox-fallback": "false",
    "trusted-users": "root",
    "keep-failed": "false",
}


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
    sandbox_paths: list[str] = field(default_factory=list)
    fixed_output_network: bool = False

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
            cgroup_parent=parent if cg.usable(parent) else None,
            sandbox_paths=list(cb.sandbox_paths),
            fixed_output_network=cb.fixed_output_network)
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
    # The jails pass through it as an unprivileged uid (whatever the umask).
    work_dir.chmod(0o711)
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
        # A catalog environment's own roots never age out (`nixjail gc`),
        # while these may have: it is built all the same.
        catalog_inputs, catalog_script = root_paths(config.roots_dir / nix.CATALOG_ROOTS, key)
        inputs, script = nix.root_target(catalog_inputs), nix.root_target(catalog_script)
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
            return BuildOutcome(StageResult.built_before(
                environment, int((time.monotonic() - started) * 1000)), environment)
        return _build(config, key, shell_nix, limits, job_name, should_stop)


def _build(config: BuilderConfig, key: str, shell_nix: str, limits: ResolvedLimits,
           job_name: str, should_stop: Callable[[], bool]) -> BuildOutcome:
    job_dir = config.work_dir / f"{os.getpid()}-{job_name}"
    if job_dir.exists():
        remove_job_dir(job_dir)
    jail = config.jail
    group = None
    daemon = None
    failed_drvs: list[str] = []
    since = int(time.time())
    try:
        prepare_job_dir(job_dir, shell_nix, jail)
        if config.cgroup_parent is not None:
            extra = DAEMON_MEMORY_MIB if config.private_daemon else 0
            group = cg.JobCgroup(config.cgroup_parent, job_dir.name,
                                 (limits.memory_mib + extra) * 1024 * 1024,
                                 max_tasks=limits.processes + cg.JOB_OWN_TASKS)
        if config.private_daemon:
            daemon = _start_daemon(job_dir, group, jail.nsjail,
                                   daemon_options(limits, config.sandbox_paths), limits,
                                   host_network=config.fixed_output_network)
            jail = replace(jail, daemon_socket_dir=job_dir / "daemon")
        run = run_jail(jail, job_dir, limits, cgroup=group, should_stop=should_stop)
        if run.killed_for is StageStatus.error:
            raise LeaseLost(f"the lease on {job_name} was lost during its build")
        result = run.result
        if result.status is not StageStatus.ok:
            failed_drvs = nix.built_derivations(result.stderr)
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
            group.kill_all()
        # Before the cgroup goes: the build tmpfs's pages are charged to it.
        remove_job_dir(job_dir)
        if group is not None:
            group.remove()
        if config.private_daemon:
            for chroot in nix.remove_abandoned_build_chroots(nix.store_dir(config.store)):
                log.info("removed the abandoned build sandbox %s", chroot)
        # Once the job's daemon is gone: its builds are over.
        try:
            for output in nix.remove_failed_outputs(config.store, failed_drvs, since):
                log.info("removed what a failed build left at %s", output)
        except ToolError as exc:
            log.warning("removing what the failed builds of %s left: %s", key, exc)


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


def daemon_options(limits: ResolvedLimits, sandbox_paths: list[str]) -> dict[str, str]:
    """The job's daemon's settings (beside the host's nix.conf, which they override)."""
    options = dict(DAEMON_OPTIONS)
    # The sandbox's /dev/shm is a tmpfs of each build; its pages count against
    # the job's memory, and past this size a write fails with ENOSPC.
    options["sandbox-dev-shm-size"] = f"{limits.memory_mib}m"
    # The daemon keeps each build's log on the host's disk: a few times what
    # the stage may print, so the stage's own output cap (output_limit) is
    # what a loud build meets first.
    cap = limits.output_kib * 1024
    options["max-build-log-size"] = str(max(LOG_SIZE_FACTOR * cap, cap + LOG_SIZE_SLACK))
    if sandbox_paths:
        options["extra-sandbox-paths"] = " ".join(sandbox_paths)
    return options


def _build_tmpfs(build_tmp: Path, limits: ResolvedLimits) -> None:
    """The daemon's TMPDIR, where Nix makes each build's /build: a tmpfs of the
    job's, bounded by its memory limit (its pages are charged to the builder's
    cgroup too), so a build can fill neither the host's disk nor its memory."""
    build_tmp.mkdir(mode=0o700)
    _run_tool(["mount", "-t", "tmpfs", "-o",
               f"size={limits.memory_mib}m,mode=0700,nosuid,nodev", "nixjail-build",
               str(build_tmp)], "mounting the job's build tmpfs")


def remove_job_dir(job_dir: Path) -> None:
    """A job's directory, its build tmpfs unmounted first."""
    build_tmp = job_dir / "tmp"
    if os.path.ismount(build_tmp):
        try:
            # Lazily: a builder killed a moment ago may still hold it open.
            _run_tool(["umount", "--lazy", str(build_tmp)], "unmounting the job's build tmpfs")
        except ToolError as exc:
            log.error("%s", exc)
    shutil.rmtree(job_dir, ignore_errors=True)


def _run_tool(argv: list[str], what: str) -> None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolError(f"{what}: {exc}") from None
    if proc.returncode != 0:
        raise ToolError(f"{what} failed: {proc.stderr.strip()[-500:]}")


def daemon_argv(nsjail: str, daemon: str, options: dict[str, str], log_file: Path,
                *, host_network: bool = False) -> list[str]:
    """nix-daemon under nsjail for the seccomp policy and, unless `host_network`,
    a network namespace of its own: nsjail applies them and execs the daemon in
    place (`-Me`), so the daemon keeps its pid, root, capabilities and limits,
    and every builder it forks inherits the filter, under the Nix sandbox's own.

    The Nix sandbox gives every build an empty network namespace except the
    fixed-output ones, which share the daemon's: in the job's own namespace they
    see only its loopback, never a service of the host (the API on 127.0.0.1).
    The daemon needs no network: its client talks to it through a Unix socket
    and a job's daemon has no substituters."""
    kinds = ["user", "ns", "pid", "ipc", "uts", "cgroup"] + (["net"] if host_network else [])
    no_namespaces = [f"--disable_clone_new{kind}" for kind in kinds]
    argv = [nsjail, "--mode", "e", "--quiet", "--log", str(log_file), "--chroot", "/",
            *no_namespaces, "--keep_caps", "--keep_env", "--disable_rlimits",
            "--nice_level", "0", "--seccomp_string", DAEMON_POLICY, "--", daemon]
    for name, value in options.items():
        argv += ["--option", name, value]
    return argv


def _start_daemon(job_dir: Path, group: cg.JobCgroup | None, nsjail: str,
                  options: dict[str, str], limits: ResolvedLimits,
                  *, host_network: bool) -> subprocess.Popen:
    """A nix-daemon of this job alone, on the host store, in the job's cgroup.

    Every build it runs for the jailed client forks from it, so the builds
    count against the job's memory limit and die with the job.
    """
    socket_dir = job_dir / "daemon"
    socket_dir.mkdir(mode=0o755)
    socket_dir.chmod(0o755)
    env = {name: value for name, value in os.environ.items()
           if name not in ("NIX_REMOTE", "NIX_PATH", "LISTEN_FDS", "LISTEN_PID",
                           "LISTEN_FDNAMES", "NOTIFY_SOCKET", "NIX_DAEMON_SOCKET_PATH",
                           "NIX_CONFIG")}
    env["NIX_DAEMON_SOCKET_PATH"] = str(socket_dir / "socket")
    build_tmp = job_dir / "tmp"
    _build_tmpfs(build_tmp, limits)
    env["TMPDIR"] = str(build_tmp)
    daemon = shutil.which("nix-daemon")
    if daemon is None:
        raise ToolError("nix-daemon is not installed on this cache builder")
    argv = daemon_argv(nsjail, daemon, options, job_dir / "daemon-nsjail.log",
                       host_network=host_network)
    if group is not None:
        # In before it can fork a builder: it forks only on a connection, and
        # the jail connects after the socket appears.
        argv = group.join_argv(argv)
    log_file = open(job_dir / "daemon.log", "wb")  # noqa: SIM115 (closed with the daemon)
    try:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log_file,
                                stderr=log_file, start_new_session=True)
    except OSError as exc:
        raise ToolError(f"cannot start the job's nix-daemon: {exc.strerror}") from None
    finally:
        log_file.close()
    deadline = time.monotonic() + DAEMON_START_S
    while not (socket_dir / "socket").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop_daemon(proc, job_dir)
            said = "\n".join(
                (job_dir / name).read_text(errors="replace")[-500:]
                for name in ("daemon.log", "daemon-nsjail.log") if (job_dir / name).exists())
            raise ToolError(f"the job's nix-daemon did not start: {said}")
        time.sleep(0.005)
    return proc


def _stop_daemon(proc: subprocess.Popen, job_dir: Path) -> None:
    # SIGTERM first: the daemon then stops the builds it still runs itself.
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(DAEMON_STOP_S)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()
    with contextlib.suppress(FileNotFoundError):
        text = (job_dir / "daemon.log").read_text(errors="replace").strip()
        if text:
            log.debug("nix-daemon of %s: %s", job_dir.name, text[-2000:])
