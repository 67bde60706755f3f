"""`nixjail list`: one line per submission, newest first, paging by the API's cursor."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC
from typing import Any

from nixjail.cli.api_options import add_api_options, api_command, client_from, command_parser
from nixjail.cli.exit_codes import API_EPILOG
from nixjail.cli.submit import describe
from nixjail.models import STAGES, StageStatus, SubmissionStatus

# The largest page the API gives (`limit` is 1..200).
PAGE_SIZE = 200
DEFAULT_LIMIT = 50
ERROR_SHOWN_CHARS = 80

# An item of the page `Client.list` returns: a whole submission, or the API's
# summary of one; both have the fields read here.
Listed = Any


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `list`."""
    parser = command_parser(
        subparsers, "list", summary="list submissions, newest first",
        description="List submissions, newest first: id, status, created_at (UTC) and a\n"
        "short summary of each. When more remain, stderr says how to go on.",
        epilog=API_EPILOG)
    parser.add_argument("--status", metavar="STATUS[,STATUS]", action="append", default=[],
                        type=_statuses,
                        help=f"only these statuses ({', '.join(SubmissionStatus)}); "
                        "repeatable")
    count = parser.add_mutually_exclusive_group()
    count.add_argument("--limit", metavar="N", type=_positive_int, default=DEFAULT_LIMIT,
                       help=f"show at most N submissions (default {DEFAULT_LIMIT})")
    count.add_argument("--all", action="store_true", help="show every submission")
    parser.add_argument("--cursor", metavar="CURSOR",
                        help="go on where an earlier listing stopped (it names the cursor)")
    parser.add_argument("--json", action="store_true",
                        help='print {"items": [submission…], "next_cursor": CURSOR or null}')
    add_api_options(parser)
    parser.set_defaults(func=api_command(run))


def _statuses(text: str) -> set[SubmissionStatus]:
    try:
        return {SubmissionStatus(word.strip()) for word in text.split(",")}
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"unknown status in {text!r} (statuses: {', '.join(SubmissionStatus)})") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def _stages(item: Listed) -> dict[str, Any]:
    # A page item's stages are either the Stages model or a mapping of them.
    stages = item.stages
    return dict(stages) if isinstance(stages, dict) else {s: getattr(stages, s) for s in STAGES}


def one_line_summary(item: Listed) -> str:
    """What became of it, or what it does now, in a few words."""
    stages = _stages(item)
    if item.status is SubmissionStatus.done and stages.get("run") is not None:
        return describe("run", stages["run"])
    if item.status is SubmissionStatus.failed:
        for stage in ("dependencies", "compile"):
            result = stages.get(stage)
            if result is not None and result.status not in (StageStatus.ok,
                                                             StageStatus.skipped):
                return describe(stage, result)
    if item.status is SubmissionStatus.error and item.error:
        reason = " ".join(item.error.split())
        if len(reason) > ERROR_SHOWN_CHARS:
            reason = reason[:ERROR_SHOWN_CHARS - 1] + "…"
        return reason
    if item.status is SubmissionStatus.cancelled:
        reached = [stage for stage in STAGES if stages.get(stage) is not None
                   and stages[stage].status is not StageStatus.skipped]
        return f"after {reached[-1]}" if reached else "before any stage ran"
    if item.status is SubmissionStatus.building:
        return "dependencies running"
    if item.status is SubmissionStatus.running:
        stage = next((s for s in ("compile", "run") if stages.get(s) is None), "run")
        return f"{stage} running"
    return f"attempt {item.attempts + 1}" if item.attempts else "-"


def format_line(item: Listed) -> str:
    """`ID  STATUS  CREATED_AT  SUMMARY`, the columns lined up."""
    created = item.created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{item.id}  {item.status:<9}  {created}  {one_line_summary(item)}"


def run(args: argparse.Namespace) -> int:
    """Page through the API until enough are shown or none are left."""
    client = client_from(args)
    statuses = set().union(*args.status) if args.status else None
    cursor = args.cursor
    items: list[Listed] = []
    while True:
        wanted = PAGE_SIZE if args.all else min(PAGE_SIZE, args.limit - len(items))
        page = client.list(statuses=statuses, cursor=cursor, limit=wanted)
        items += page.items
        if not args.json:
            for submission in page.items:
                print(format_line(submission))
        cursor = page.next_cursor
        if cursor is None or (not args.all and len(items) >= args.limit):
            break
    if args.json:
        print(json.dumps({"items": [s.model_dump(mode="json") for s in items],
                          "next_cursor": cursor}, indent=2))
    elif cursor is not None:
        again = ["nixjail list", *(f"--status {','.join(sorted(s))}" for s in args.status),
                 f"--cursor {cursor}"]
        print(f"nixjail: more submissions: {' '.join(again)}", file=sys.stderr)
    return 0
