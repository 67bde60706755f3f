"""`nixjail runner`: run leased submissions, one container each."""

from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path

from nixjail import docker as nj_docker
from nixjail.client import Client, LeaseSource, SpoolLeaseSource
from nixjail.runner.service import Runner, kick_socket
from nixjail.settings import load_settings
from nixjail.spool import Spool


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
    source: LeaseSource
    if settings.runner.api_url:
        # A worker host of its own: it leases from the API over HTTP, and its
        # predecessor's leases expire there by their deadline.
        token = (settings.runner.api_token_file.read_text().strip()
                 if settings.runner.api_token_file else None)
        spool = None
        source = Client(settings.runner.api_url, token)
    else:
        spool = Spool.from_settings(settings)
        source = SpoolLeaseSource(spool, settings)
    runner = Runner(settings, source, nj_docker.client(), spool=spool)
    signal.signal(signal.SIGTERM, lambda *_: runner.stopping.set())
    listener = None if args.no_kick_socket else kick_socket(settings.runner.kick_socket)
    try:
        runner.serve(listener)
    finally:
        if listener is not None:
            listener.close()
    return 0
