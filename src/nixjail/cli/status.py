"""`nixjail status ID`: what `nixjail submit` shows at the end, for any submission.

Prints the run stage's stdout and stderr as its own and the stage table on
stderr, and exits with the code `submit` would for the submission as it is
(75 while it has not ended). `--wait S` long-polls for its end first.
"""

from __future__ import annotations

import argparse
import sys
import time

from nixjail.cli.api_options import (
    add_api_options,
    api_command,
    client_from,
    command_parser,
    positive_float,
)
from nixjail.cli.exit_codes import (
    SUBMISSION_EPILOG,
    ExitCode,
    add_program_exit_code_option,
    for_submission,
)
from nixjail.cli.submit import Progress, follow, show_result


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `status`."""
    parser = command_parser(
        subparsers, "status", summary="show a submission's result or progress",
        description="Show submission ID as `nixjail submit` shows it at the end: the\n"
        "program's output, the stage table on stderr, and the same exit code.",
        epilog=SUBMISSION_EPILOG)
    parser.add_argument("submission_id", metavar="ID")
    parser.add_argument("--wait", metavar="S", type=positive_float,
                        help="wait up to S seconds for it to end, showing its stages as "
                        "they come")
    parser.add_argument("--json", action="store_true",
                        help="print only the submission, as the API returns it")
    add_program_exit_code_option(parser)
    add_api_options(parser)
    parser.set_defaults(func=api_command(run))


def run(args: argparse.Namespace) -> int:
    """Look the submission up (waiting with --wait), show it, exit with its code."""
    client = client_from(args)
    submission = client.get(args.submission_id)
    if args.wait is not None and not submission.status.ended:
        progress = Progress(sys.stderr, interactive=sys.stderr.isatty(), quiet=args.json)
        try:
            submission = follow(client, submission, progress, time.monotonic() + args.wait)
        except KeyboardInterrupt:
            print(f"\nnixjail: stopped waiting; submission {submission.id} goes on",
                  file=sys.stderr)
            return ExitCode.GAVE_UP
    if args.json:
        print(submission.model_dump_json(indent=2))
    else:
        show_result(submission, sys.stdout, sys.stderr)
        if not submission.status.ended:
            waited = f" after waiting {args.wait:g} s" if args.wait is not None else ""
            print(f"nixjail: submission {submission.id} has not ended{waited}",
                  file=sys.stderr)
    return for_submission(submission, program_exit_code=args.program_exit_code)
