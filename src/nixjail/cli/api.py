"""`nixjail api`: serve the HTTP API."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from nixjail.errors import NixjailError
from nixjail.settings import load_settings
from nixjail.spool import Spool


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "api", help="serve the HTTP API",
        description="Serve the HTTP API on the socket systemd passes, "
        "or on --listen / settings.api.listen.")
    _add_arguments(parser)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--settings", type=Path, metavar="FILE",
                        help="settings TOML (default: $NIXJAIL_SETTINGS, else built-in)")
    parser.add_argument("--listen", metavar="HOST:PORT",
                        help="address when systemd passes no socket")
    parser.add_argument("--spool", type=Path, metavar="DIR", help="the spool directory")
    parser.add_argument("--run-dir", type=Path, metavar="DIR",
                        help="the runtime directory (leases)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Imported here: `nixjail --help` should not pay for falcon and waitress.
    from nixjail.api.server import serve

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = load_settings(args.settings)
    update = {key: value for key, value in
              (("spool_dir", args.spool), ("run_dir", args.run_dir)) if value is not None}
    settings = settings.model_copy(update=update)
    return serve(settings, Spool.from_settings(settings), listen=args.listen)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m nixjail.cli.api`: the same command without the `nixjail` entry point."""
    parser = argparse.ArgumentParser(prog="nixjail api")
    _add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except NixjailError as exc:
        print(f"nixjail api: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
