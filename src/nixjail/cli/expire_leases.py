"""`nixjail expire-leases`: one pass of lease expiry (`nixjail.expiry`), run by
a systemd timer."""

from __future__ import annotations

import argparse

from nixjail.cli.options import add_settings_options
from nixjail.expiry import HolderAlive, expire_pass
from nixjail.holders import systemd_holder_alive
from nixjail.settings import load_settings


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `expire-leases`."""
    parser = subparsers.add_parser(
        "expire-leases", help="requeue submissions whose lease expired (one pass)",
        description="Requeue every submission whose lease is past its deadline; past "
        "the maximum attempts, end it as error. One pass, for a systemd timer.")
    add_settings_options(parser, dirs=False)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, *, holder_alive: HolderAlive | None = None) -> int:
    """Print one line per submission requeued, ended or sent to the workers;
    silence when there was none."""
    settings = load_settings(args.settings)
    if holder_alive is None:
        # Under systemd: also ask it whether each holder's unit invocation runs.
        holder_alive = systemd_holder_alive()
    for line in expire_pass(settings, holder_alive=holder_alive):
        print(line)
    return 0
