"""`nixjail cancel ID`: end a submission as cancelled, and say what became of it."""

from __future__ import annotations

import argparse
import sys

from nixjail.cli.api_options import add_api_options, api_command, client_from, command_parser
from nixjail.cli.exit_codes import ALREADY_ENDED, CANCEL_EPILOG
from nixjail.client import ApiConflict
from nixjail.models import SubmissionStatus


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `cancel`."""
    parser = command_parser(
        subparsers, "cancel", summary="cancel a submission that has not ended",
        description="Cancel submission ID: a queued one never runs, a running one has\n"
        "its container stopped. Prints `ID cancelled (was STATUS)`.",
        epilog=CANCEL_EPILOG)
    parser.add_argument("submission_id", metavar="ID")
    parser.add_argument("--json", action="store_true",
                        help="print only the submission afterwards, as the API returns it")
    add_api_options(parser)
    parser.set_defaults(func=api_command(run))


def run(args: argparse.Namespace) -> int:
    """Cancel it; 0 once it is cancelled, 1 if it had ended otherwise."""
    client = client_from(args)
    # Looked up first only to say what it was doing; the DELETE decides.
    before = client.get(args.submission_id)
    try:
        submission = client.cancel(args.submission_id)
        outcome: str | None = f"{submission.id} cancelled (was {before.status})"
    except ApiConflict:
        submission = client.get(args.submission_id)
        outcome = (f"{submission.id} cancelled (already)"
                   if submission.status is SubmissionStatus.cancelled else None)
    if args.json:
        print(submission.model_dump_json(indent=2))
    elif outcome is not None:
        print(outcome)
    else:
        print(f"nixjail: submission {submission.id} had already ended as "
              f"{submission.status}; nothing to cancel", file=sys.stderr)
    return 0 if outcome is not None else ALREADY_ENDED
