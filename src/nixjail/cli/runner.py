"""`nixjail runner`: run leased submissions, one container each."""

from __future__ import annotations

import argparse

from nixjail.cli.options import add_settings_options, log_to_stderr, settings_from
from nixjail.runner.service import run_runner


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
    run_runner(settings, kicks=not args.no_kick_socket)
    return 0
