"""`nixjail serve`: the API, the runner, the cache builder and lease expiry of
one host, from one command, until stopped (`nixjail.supervisor`).

With no settings file it needs nothing set: state goes under `--state-dir`
(`/var/lib/nixjail` for root), leases under `--run-dir` (`/run/nixjail`),
the cache builder is on, and `<nixpkgs>` is the machine's own or, where it
has none, the fixture nixpkgs of a nixjail checkout. With a settings file
(the one the units take) it uses that file's paths and choices; the options
still override them. No part ever idles out.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import nixjail
from nixjail.cli.options import log_to_stderr
from nixjail.errors import InvalidInput
from nixjail.settings import SETTINGS_ENV, Settings, load_settings

# A nixjail checkout's stand-in for nixpkgs (tests/fixtures/nixpkgs).
FIXTURE_NIXPKGS = Path(nixjail.__file__).resolve().parents[2] / "tests" / "fixtures" / "nixpkgs"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve", help="run every part of one host (API, runner, cache builder, lease "
        "expiry) until stopped",
        description="Run the API, the runner, the cache builder and lease expiry of one "
        "host until SIGTERM or Ctrl-C. A part that dies is started again; /healthz "
        "reports each part.")
    parser.add_argument("--settings", type=Path, metavar="FILE",
                        help=f"settings TOML (default: ${SETTINGS_ENV}, else the local default)")
    parser.add_argument("--state-dir", type=Path, metavar="DIR",
                        help="where submissions and GC roots live (default: /var/lib/nixjail "
                        "for root, else ~/.local/state/nixjail)")
    parser.add_argument("--run-dir", type=Path, metavar="DIR",
                        help="where leases, locks and the runner's socket live (default: "
                        "/run/nixjail for root, else $XDG_RUNTIME_DIR/nixjail)")
    parser.add_argument("--listen", metavar="HOST:PORT",
                        help="the API's address (default: settings.api.listen, 127.0.0.1:8460)")
    parser.set_defaults(func=run)


def _default_state_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/nixjail")
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "nixjail"


def _default_run_dir(state_dir: Path) -> Path:
    if os.geteuid() == 0:
        return Path("/run/nixjail")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return Path(runtime) / "nixjail" if runtime else state_dir / "run"


def machine_nixpkgs() -> Path | None:
    """Where this machine's `<nixpkgs>` is (from NIX_PATH), if it has one."""
    try:
        found = subprocess.run(["nix-instantiate", "--find-file", "nixpkgs"],
                               capture_output=True, text=True, timeout=30, check=False,
                               stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    path = found.stdout.strip()
    return Path(path) if found.returncode == 0 and path else None


def _nixpkgs() -> Path:
    found = machine_nixpkgs()
    if found is not None:
        return found
    if (FIXTURE_NIXPKGS / "bin" / "busybox").exists():
        return FIXTURE_NIXPKGS
    raise InvalidInput("runner.nixpkgs", "this machine has no <nixpkgs> on NIX_PATH and "
                       "this is no prepared nixjail checkout (scripts/bootstrap); set "
                       "runner.nixpkgs and cache_builder.nixpkgs in a settings file")


# The local default keeps this many containers warm (runner.pool_size).
SERVE_POOL_SIZE = 2


def _place(settings: Settings, state_dir: Path | None, run_dir: Path | None) -> None:
    """Move the state (and everything kept under it) and the run dir."""
    if state_dir is not None:
        settings.spool_dir = state_dir
        settings.runner.gc_roots_dir = state_dir / "gcroots" / "running"
        settings.cache_builder.roots_dir = state_dir / "gcroots" / "environments"
        settings.gc.roots_dir = state_dir / "gcroots"
    if run_dir is not None:
        settings.run_dir = run_dir
        settings.runner.kick_socket = run_dir / "runner.sock"


def host_settings(args: argparse.Namespace) -> Settings:
    """The settings `nixjail serve` runs with, from the options and the file if any."""
    path = args.settings or os.environ.get(SETTINGS_ENV)
    state_dir = args.state_dir.resolve() if args.state_dir else None
    run_dir = args.run_dir.resolve() if args.run_dir else None
    if path:
        settings = load_settings(path)
    else:
        settings = Settings()
        settings.cache_builder.enabled = True
        settings.runner.pool_size = SERVE_POOL_SIZE
        state_dir = state_dir or _default_state_dir()
        run_dir = run_dir or _default_run_dir(state_dir)
    _place(settings, state_dir, run_dir)
    for role in ("runner", "cache_builder"):
        if getattr(settings, role).api_url:
            raise InvalidInput(f"settings.{role}.api_url",
                               "nixjail serve runs every part on this host, from its own "
                               "spool; leave it unset")
    if settings.runner.nixpkgs is None or settings.cache_builder.nixpkgs is None:
        nixpkgs = _nixpkgs()
        settings.runner.nixpkgs = settings.runner.nixpkgs or nixpkgs
        settings.cache_builder.nixpkgs = settings.cache_builder.nixpkgs or nixpkgs
    # Nothing outside starts a part again here, as systemd's sockets do.
    settings.runner.idle_exit_s = None
    settings.cache_builder.idle_exit_s = None
    return settings


def _prepare_dirs(settings: Settings) -> None:
    settings.spool_dir.mkdir(parents=True, exist_ok=True)
    # The cache builder's jail, an unprivileged uid, reaches its job's files
    # under the run dir, as under /run/nixjail.
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    settings.run_dir.chmod(0o755)


def run(args: argparse.Namespace) -> int:
    from nixjail.supervisor import Supervisor

    log_to_stderr()
    settings = host_settings(args)
    _prepare_dirs(settings)
    supervisor = Supervisor(settings, listen=args.listen)

    def ready(supervisor: Supervisor) -> None:
        parts = ", ".join(supervisor.health())
        print(f"nixjail serve: API on {supervisor.url}\n"
              f"  submissions in {settings.spool_dir}, leases in {settings.run_dir}\n"
              f"  <nixpkgs> is {settings.runner.nixpkgs}\n"
              f"  parts: {parts}; stop with Ctrl-C or SIGTERM", file=sys.stderr, flush=True)

    return supervisor.run(ready)
