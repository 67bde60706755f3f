"""`nixjail api`: serve the HTTP API."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from nixjail.cli.options import add_settings_options, log_to_stderr, settings_from
from nixjail.errors import NixjailError
from nixjail.spool import Spool


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "api", help="serve the HTTP API",
        description="Serve the HTTP API on the socket systemd passes, "
        "or on --listen / settings.api.listen.")
    _add_arguments(parser)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_options(parser)
    parser.add_argument("--listen", metavar="HOST:PORT",
                        help="address when systemd passes no socket")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Imported here: `nixjail --help` should not pay for falcon and waitress.
    from nixjail.api.server import serve

    log_to_stderr()
    settings = settings_from(args)
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
