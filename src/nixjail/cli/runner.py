"""`nixjail runner`: run leased submissions, one container each."""

from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path

from nixjail import docker as nj_docker
from nixjail.leasing import lease_source
from nixjail.runner.service import Runner, kick_socket
from nixjail.settings import load_settings


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "runner", help="run leased submissions, each in its own container",
        description="Lease run jobs and run each submission in its own container; "
        "exits after idling.")
    parser.add_argument("--settings", type=Path, help="settings TOML file")
    parser.add_argument("--spool", type=Path, help="spool directory (overrides settings)")
    parser.add_argument("--run-dir", type=Path, help="lease directory (overrides settings)")
    parser.add_argument("--idle-exit", type=float, metavar="S",
                        help="exit after S seconds without work")
    parser.add_argument("--no-kick-socket", action="store_true",
                        help="do not listen for kicks; poll only")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = load_settings(args.settings)
    overrides = {k: v for k, v in (("spool_dir", args.spool), ("run_dir", args.run_dir))
                 if v is not None}
    settings = settings.model_copy(update=overrides)
    if args.idle_exit is not None:
        settings.runner.idle_exit_s = args.idle_exit
    source, spool = lease_source(settings, settings.runner.api_url,
                                 settings.runner.api_token_file)
    runner = Runner(settings, source, nj_docker.client(), spool=spool)
    signal.signal(signal.SIGTERM, lambda *_: runner.stopping.set())
    # Only this host's API kicks: a worker host of its own long-polls instead.
    kicks = not (args.no_kick_socket or settings.runner.api_url)
    listener = kick_socket(settings.runner.kick_socket) if kicks else None
    try:
        runner.serve(listener)
    finally:
        if listener is not None:
            listener.close()
    return 0
