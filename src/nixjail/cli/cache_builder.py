"""`nixjail cache-builder`: build the environments of dependencies jobs."""

from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path

from nixjail.cache_builder.service import CacheBuilder
from nixjail.leasing import lease_source
from nixjail.settings import load_settings


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "cache-builder", help="build and cache submission environments",
        description="Lease dependencies jobs, build each shell.nix in nsjail through "
        "nix, keep the result with a GC root and publish it signed for the workers.")
    parser.add_argument("--settings", type=Path, help="settings TOML file")
    parser.add_argument("--spool", type=Path, help="spool directory (overrides settings)")
    parser.add_argument("--run-dir", type=Path, help="lease directory (overrides settings)")
    parser.add_argument("--idle-exit", type=float, metavar="S",
                        help="exit after S seconds without work (default: run until stopped)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = load_settings(args.settings)
    overrides = {k: v for k, v in (("spool_dir", args.spool), ("run_dir", args.run_dir))
                 if v is not None}
    settings = settings.model_copy(update=overrides)
    if args.idle_exit is not None:
        settings.cache_builder.idle_exit_s = args.idle_exit
    source, spool = lease_source(settings, settings.cache_builder.api_url,
                                 settings.cache_builder.api_token_file)
    builder = CacheBuilder(settings, source, spool=spool)
    signal.signal(signal.SIGTERM, lambda *_: builder.stopping.set())
    builder.serve()
    return 0
