"""The exit codes of the commands that talk to the API (docs/cli.md).

A `done` submission whose program exited passes the program's own exit code
through (128+N when signal N killed it, as a shell reports it). Every other
outcome gets a code of nixjail's own from 64-75, the range sysexits.h keeps
for a program's own conditions; usage (64), internal error (70) and
temporary failure (75) keep their sysexits meaning. A program that itself
exits with one of those is told apart with `--json` or
`--no-program-exit-code`. `submit` and `status` both decide with
`for_submission`, so one submission always gives one code.
"""

from __future__ import annotations

import argparse
from enum import IntEnum

from nixjail.models import StageStatus, Submission, SubmissionStatus, Verdict


class ExitCode(IntEnum):
    USAGE = 64
    COMPILE_FAILED = 65
    ENVIRONMENT_FAILED = 66
    TIME_LIMIT = 67
    MEMORY_LIMIT = 68
    OUTPUT_LIMIT = 69
    ERROR = 70
    CANCELLED = 71
    NOT_ACCEPTED = 72
    GAVE_UP = 75


# `cancel` only: the submission ended on its own before the cancel came.
ALREADY_ENDED = 1

_LIMITS = {
    StageStatus.time_limit: ExitCode.TIME_LIMIT,
    StageStatus.memory_limit: ExitCode.MEMORY_LIMIT,
    StageStatus.output_limit: ExitCode.OUTPUT_LIMIT,
}

# Shown by --help of `submit` and `status`; docs/cli.md has the same table.
SUBMISSION_EPILOG = """\
exit codes:
  N       done: the program exited with N (any of 0-255)
  128+N   done: the program was killed by signal N
  64      usage error: bad arguments or DIR, or the API refused the request
          (invalid input, unknown id, token refused)
  65      failed: compile.sh did not succeed (or hit a compile limit)
  66      failed: the environment (shell.nix) did not build
  67      done: the program hit its time limit (wall or CPU)
  68      done: the program hit its memory limit
  69      done: the program hit its output limit
  70      error: nixjail failed (the submission ended error, or the API
          answered 5xx)
  71      cancelled
  72      done: a test case was not accepted (the case table says which)
  75      gave up: not ended when waiting stopped (--timeout, --wait, Ctrl-C)
          or the API was unreachable; the submission goes on, follow it with
          `nixjail status ID`
A program that itself exits 64-75 is told apart from nixjail's codes with
--json (status, stages.run.status and exit_code) or --no-program-exit-code."""

API_EPILOG = """\
exit codes:
  0       done
  64      usage error: bad arguments, or the API refused the request
  70      the API answered 5xx
  75      gave up: the API was unreachable, or Ctrl-C"""

CANCEL_EPILOG = f"""\
exit codes:
  0       the submission is cancelled (now, or it already was)
  {ALREADY_ENDED}       it had already ended otherwise (done, failed, error): nothing changed
  64      usage error: bad arguments, unknown id, token refused
  70      the API answered 5xx
  75      gave up: the API was unreachable, or Ctrl-C"""


def add_program_exit_code_option(parser: argparse.ArgumentParser) -> None:
    """`--no-program-exit-code`: for scripts that must tell every code apart."""
    parser.add_argument("--no-program-exit-code", dest="program_exit_code",
                        action="store_false",
                        help="exit 0 for a done submission whose program exited or was "
                        "signalled, whatever its code: every other code is then nixjail's")


def for_submission(submission: Submission, *, program_exit_code: bool = True) -> int:
    """The exit code that `submission`, as it is now, stands for."""
    status = submission.status
    if not status.ended:
        return ExitCode.GAVE_UP
    if status is SubmissionStatus.cancelled:
        return ExitCode.CANCELLED
    if status is SubmissionStatus.error:
        return ExitCode.ERROR
    if status is SubmissionStatus.failed:
        dependencies = submission.stages.dependencies
        if dependencies is not None and dependencies.status not in (
                StageStatus.ok, StageStatus.skipped):
            return ExitCode.ENVIRONMENT_FAILED
        return ExitCode.COMPILE_FAILED
    if submission.judgement is not None:
        accepted = submission.judgement.verdict is Verdict.accepted
        return 0 if accepted else ExitCode.NOT_ACCEPTED
    run = submission.stages.run
    if run is None:
        return ExitCode.ERROR  # done without a run result: the record is broken
    if run.status in _LIMITS:
        return _LIMITS[run.status]
    if run.status is StageStatus.signaled and run.signal is not None:
        code = 128 + run.signal
    elif run.status in (StageStatus.ok, StageStatus.nonzero_exit) and run.exit_code is not None:
        code = run.exit_code
    else:
        return ExitCode.ERROR
    return code if program_exit_code else 0
