"""What the commands that talk to the API share (`submit`, `status`, `cancel`,
`list`): their parser, `--api` and the token, and how a failure becomes one
line on stderr and an exit code of the scheme in `exit_codes`."""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from nixjail.cli.exit_codes import ExitCode
from nixjail.client import API_URL_ENV, DEFAULT_API_URL, TOKEN_ENV, ApiUnavailable, Client
from nixjail.errors import ApiError, InvalidInput, NixjailError

# Answers that say "not now" rather than "never": waiting and trying again may help.
TEMPORARY_STATUSES = frozenset({408, 429, 502, 503, 504, 507})

Command = Callable[[argparse.Namespace], int]


def command_parser(subparsers: argparse._SubParsersAction, name: str, *, summary: str,
                   description: str, epilog: str) -> argparse.ArgumentParser:
    """The subcommand's parser; its usage errors exit 64, not argparse's 2,
    which a program's own exit code could be."""
    parser = subparsers.add_parser(name, help=summary, description=description, epilog=epilog,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)

    def usage_error(message: str) -> NoReturn:
        parser.print_usage(sys.stderr)
        parser.exit(ExitCode.USAGE, f"{parser.prog}: error: {message}\n")

    parse_known_args = parser.parse_known_args

    def parse_all_args(args: Any = None, namespace: Any = None) -> tuple[Any, list[str]]:
        # Left to itself the top-level parser reports unknown options, with exit 2.
        parsed, extras = parse_known_args(args, namespace)
        if extras:
            usage_error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras

    parser.error = usage_error  # type: ignore[method-assign]
    parser.parse_known_args = parse_all_args  # type: ignore[method-assign]
    return parser


def add_api_options(parser: argparse.ArgumentParser) -> None:
    """`--api URL` and the bearer token (`--token`, `--token-file`, `$NIXJAIL_TOKEN`)."""
    group = parser.add_argument_group("API")
    group.add_argument("--api", metavar="URL",
                       default=os.environ.get(API_URL_ENV) or DEFAULT_API_URL,
                       help=f"the nixjail API (default: ${API_URL_ENV} or {DEFAULT_API_URL})")
    token = group.add_mutually_exclusive_group()
    token.add_argument("--token", default=os.environ.get(TOKEN_ENV) or None,
                       help=f"bearer token (default: ${TOKEN_ENV})")
    token.add_argument("--token-file", metavar="FILE", type=Path,
                       help="file whose first line is the bearer token")


def positive_float(text: str) -> float:
    """An argparse type: a number above 0, such as a number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0: {text!r}")
    return value


def token_from(args: argparse.Namespace) -> str | None:
    """The token the options name, read from `--token-file` if given."""
    if args.token_file is None:
        return args.token
    try:
        lines = args.token_file.read_text().splitlines()
    except OSError as exc:
        raise InvalidInput("--token-file", f"cannot read {args.token_file}: "
                           f"{exc.strerror}") from None
    token = lines[0].strip() if lines else ""
    if not token:
        raise InvalidInput("--token-file", f"{args.token_file} holds no token")
    return token


def client_from(args: argparse.Namespace) -> Client:
    """A client of the API the options name, with their token."""
    return Client(args.api, token_from(args))


def exit_code_for(exc: NixjailError) -> int:
    """The scheme's code for a failure that stopped the command."""
    if isinstance(exc, ApiUnavailable):
        return ExitCode.GAVE_UP
    if isinstance(exc, ApiError):
        if exc.status in TEMPORARY_STATUSES:
            return ExitCode.GAVE_UP
        return ExitCode.ERROR if exc.status >= 500 else ExitCode.USAGE
    # Raised here, before asking the API: DIR, --stdin, --token-file and the like.
    return ExitCode.USAGE


def api_command(run: Command) -> Command:
    """`run` with its failures reported as one line and an exit code of the scheme."""
    @functools.wraps(run)
    def guarded(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except NixjailError as exc:
            message = str(exc)
            if isinstance(exc, ApiError) and exc.status == 401 and args.token is None \
                    and args.token_file is None:
                message += f" (give --token, --token-file or ${TOKEN_ENV})"
            print(f"nixjail: {message}", file=sys.stderr)
            return exit_code_for(exc)
        except KeyboardInterrupt:
            print("\nnixjail: interrupted", file=sys.stderr)
            return ExitCode.GAVE_UP

    return guarded
