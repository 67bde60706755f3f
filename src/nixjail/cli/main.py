"""The `nixjail` entry point.

Each subcommand lives in its own module exposing `add_parser(subparsers)`,
which sets `func(args) -> int` as the parser's default. Only the module of
the subcommand being run is imported: the services pull in heavy libraries a
submitter does not need.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from nixjail import __version__
from nixjail.errors import NixjailError

# name -> (module, one-line help shown while the module is not imported)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("nixjail.cli.serve", "run every part of one host (API, runner, cache builder, "
              "lease expiry) until stopped"),
    "submit": ("nixjail.cli.submit", "send a directory as a submission and show its result"),
    "status": ("nixjail.cli.status", "show a submission's result or progress"),
    "cancel": ("nixjail.cli.cancel", "cancel a submission that has not ended"),
    "list": ("nixjail.cli.list", "list submissions, newest first"),
    "environments": ("nixjail.cli.environments", "list the server's named environments"),
    "api": ("nixjail.cli.api", "serve the HTTP API"),
    "runner": ("nixjail.cli.runner", "lease submissions and run them in containers"),
    "cache-builder": ("nixjail.cli.cache_builder", "build and cache submission environments"),
    "expire-leases": ("nixjail.cli.expire_leases",
                      "requeue submissions whose lease expired (one pass)"),
    "gc": ("nixjail.cli.gc", "remove old environment roots and collect the Nix store's garbage"),
}


def _chosen(argv: Sequence[str]) -> str | None:
    # The top-level parser takes no option with a value, so the first word
    # that is not an option names the subcommand.
    return next((arg for arg in argv if not arg.startswith("-")), None)


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser, with the full parser of the subcommand `argv` names."""
    parser = argparse.ArgumentParser(
        prog="nixjail",
        description="Run untrusted submissions that bring their own Nix toolchain.")
    parser.add_argument("--version", action="version", version=f"nixjail {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = _chosen(argv)
    for name, (module, summary) in COMMANDS.items():
        if name == chosen:
            importlib.import_module(module).add_parser(subparsers)
        else:
            subparsers.add_parser(name, help=summary)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; its exit status, 2 on a nixjail error, 130 on Ctrl-C."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        return int(args.func(args))
    except NixjailError as exc:
        print(f"nixjail: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`): nothing left to say to it. Point
        # stdout at /dev/null so the interpreter's final flush stays quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
