"""`nixjail cache-builder`: build the environments of dependencies jobs."""

from __future__ import annotations

import argparse
import signal

from nixjail.cache_builder.service import CacheBuilder
from nixjail.cli.options import add_settings_options, log_to_stderr, settings_from
from nixjail.leasing import lease_source


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "cache-builder", help="build and cache submission environments",
        description="Lease dependencies jobs, build each shell.nix in nsjail through "
        "nix, keep the result with a GC root and publish it signed for the workers.")
    add_settings_options(parser)
    parser.add_argument("--idle-exit", type=float, metavar="S",
                        help="exit after S seconds without work (default: run until stopped)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    log_to_stderr()
    settings = settings_from(args)
    if args.idle_exit is not None:
        settings.cache_builder.idle_exit_s = args.idle_exit
    source, spool = lease_source(settings, settings.cache_builder.api_url,
                                 settings.cache_builder.api_token_file)
    builder = CacheBuilder(settings, source, spool=spool)
    signal.signal(signal.SIGTERM, lambda *_: builder.stopping.set())
    builder.serve()
    return 0
