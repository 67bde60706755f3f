"""`nixjail cache-builder`: build the environments of dependencies jobs."""

from __future__ import annotations

import argparse

from nixjail.cache_builder.service import run_cache_builder
from nixjail.cli.options import add_settings_options, log_to_stderr, settings_from


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
    run_cache_builder(settings)
    return 0
