"""`nixjail environments`: the server's catalog of named environments."""

from __future__ import annotations

import argparse

from nixjail.cli.api_options import add_api_options, api_command, client_from, command_parser
from nixjail.cli.exit_codes import API_EPILOG
from nixjail.cli.submit import aligned


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `environments`."""
    parser = command_parser(
        subparsers, "environments", summary="list the server's named environments",
        description="List the environments of the server's catalog: name, version, whether\n"
        "it is built (its first submission is then cached), aliases and description.\n"
        "`nixjail submit --environment NAME` runs a directory in one of them.",
        epilog=API_EPILOG)
    parser.add_argument("--json", action="store_true",
                        help="print the API's answer as it is")
    add_api_options(parser)
    parser.set_defaults(func=api_command(run))


def run(args: argparse.Namespace) -> int:
    listing = client_from(args).environments()
    if args.json:
        print(listing.model_dump_json(indent=2))
        return 0
    if not listing.environments:
        print("nixjail: the server's catalog is empty (settings: environments)")
        return 0
    rows = [("name", "version", "built", "aliases", "description")]
    for entry in listing.environments:
        rows.append((entry.name, entry.version, "yes" if entry.built else "no",
                     ",".join(entry.aliases), entry.description))
    print("\n".join(aligned(rows)))
    return 0
