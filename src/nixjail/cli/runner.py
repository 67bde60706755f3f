"""`nixjail runner`: run leased submissions, one container each."""

from __future__ import annotations

import argparse
import signal

from nixjail import docker as nj_docker
from nixjail.cli.options import add_settings_options, log_to_stderr, settings_from
from nixjail.leasing import lease_source
from nixjail.runner.service import Runner, kick_socket


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "runner", help="run leased submissions, each in its own container",
        description="Lease run jobs and run each submission in its own container; "
        "exits after idling.")
    add_settings_options(parser)
    parser.add_argument("--idle-exit", type=float, metavar="S",
                        help="exit after S seconds without work")
    parser.add_argument("--no-kick-socket", action="store_true",
                        help="do not listen for kicks; poll only")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    log_to_stderr()
    settings = settings_from(args)
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
