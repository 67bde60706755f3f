"""`nixjail expire-leases`: one pass of lease expiry, run by a systemd timer.

A lease past its deadline (or, once asked, whose holder is gone) sends its
submission back to the queue with attempts+1; past the maximum attempts the
submission ends as `error` with the reason. A dependencies job that no cache
builder finished within `cache_builder.fallback_after_s` goes to the workers.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from nixjail.cli.options import add_settings_options
from nixjail.errors import NotFound
from nixjail.holders import systemd_holder_alive
from nixjail.kick import runner_kicker
from nixjail.models import Submission
from nixjail.settings import Settings, load_settings
from nixjail.spool import Spool

# Whether the holder named in a lease (a unit invocation) still runs; None
# trusts deadlines alone. The D-Bus question to systemd plugs in here.
HolderAlive = Callable[[str], bool]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `expire-leases`."""
    parser = subparsers.add_parser(
        "expire-leases", help="requeue submissions whose lease expired (one pass)",
        description="Requeue every submission whose lease is past its deadline; past "
        "the maximum attempts, end it as error. One pass, for a systemd timer.")
    add_settings_options(parser, dirs=False)
    parser.set_defaults(func=run)


def expire(settings: Settings, *,
           holder_alive: HolderAlive | None = None) -> list[Submission | str]:
    """One expiry pass; what became of each submission it touched (an id if it is gone)."""
    spool = Spool.from_settings(settings)
    outcomes: list[Submission | str] = []
    for submission_id in spool.expire_leases(holder_alive=holder_alive):
        try:
            outcomes.append(spool.get(submission_id))
        except NotFound:
            outcomes.append(submission_id)
    return outcomes


def fall_back(settings: Settings) -> list[str]:
    """Dependencies jobs sent to the workers because no cache builder finished them."""
    if not settings.cache_builder.enabled:
        return []
    return Spool.from_settings(settings).fall_back_to_workers(
        settings.cache_builder.fallback_after_s)


def run(args: argparse.Namespace, *, holder_alive: HolderAlive | None = None) -> int:
    """Print one line per submission requeued, ended or sent to the workers;
    silence when there was none."""
    settings = load_settings(args.settings)
    queued_again = False
    for submission_id in fall_back(settings):
        queued_again = True
        print(f"sent {submission_id} to the workers: no cache builder built its environment "
              f"within {settings.cache_builder.fallback_after_s:g} s")
    if holder_alive is None:
        # Under systemd: also ask it whether each holder's unit invocation runs.
        holder_alive = systemd_holder_alive()
    for outcome in expire(settings, holder_alive=holder_alive):
        if isinstance(outcome, str):
            print(f"dropped the lease on {outcome} (its submission is gone)")
        elif outcome.status.ended:
            print(f"ended {outcome.id} as {outcome.status}: {outcome.error}")
        else:
            queued_again = True
            print(f"requeued {outcome.id} ({outcome.status}, attempt {outcome.attempts} done)")
    if queued_again:
        # After a reboot nothing else would start the runner for these jobs.
        runner_kicker(settings.runner.kick_socket)()
    return 0
