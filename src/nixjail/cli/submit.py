"""`nixjail submit DIR`: send a directory as a submission and show its result.

DIR holds `shell.nix`, `run.sh`, optionally `compile.sh`, and any other files
the program needs (hidden ones only with `--include-hidden`); with
`--environment NAME` the catalog's environment stands in for `shell.nix` (and
for the scripts DIR leaves out). A `tests/` folder of `NAME.in`/`NAME.out`
pairs makes test cases, judged by `--checker` or by DIR's `check.sh`. By
default the command waits for the submission to end, prints the run stage's
stdout and stderr as its own (or, with tests, a table of the cases), a summary
of the stages on stderr, and exits with the code `exit_codes.for_submission`
gives: the program's own for a program that exited, one of nixjail's for
every other outcome.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple, TextIO

from pydantic import ValidationError

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
from nixjail.client import ApiUnavailable, Client
from nixjail.errors import ApiError, InvalidInput, NixjailError
from nixjail.models import (
    LIMIT_FIELDS,
    STAGES,
    CaseResult,
    CheckerKind,
    FileContent,
    FileEncoding,
    StageResult,
    StageStatus,
    Submission,
    SubmissionRequest,
    SubmissionStatus,
)

SCRIPTS = ("shell.nix", "compile.sh", "run.sh", "check.sh")
TESTS_DIR = "tests"
# The API's default body limit: larger never gets through, so say so before
# uploading it. Counted as sent, i.e. after base64 for binary files.
MAX_FILES_BYTES = 8 * 1024 * 1024
# How often progress is looked at: often on a terminal, less so for a log.
# A long poll answers as soon as the submission ends, so neither delays the end.
POLL_INTERACTIVE_S = 1.0
POLL_QUIET_S = 5.0
# While waiting, how long the API may stay unreachable before the command gives up.
RETRY_FOR_S = 30.0
RETRY_PAUSE_S = 0.5

# flag, field of the run stage's limits, metavar, what it is
RUN_LIMIT_FLAGS: tuple[tuple[str, str, str, str], ...] = (
    ("--wall-time", "wall_time_s", "S", "wall-clock seconds"),
    ("--cpu-time", "cpu_time_s", "S", "CPU seconds"),
    ("--memory", "memory_mib", "MIB", "peak memory in MiB"),
    ("--processes", "processes", "N", "processes and threads"),
    ("--output", "output_kib", "KIB", "KiB of stdout and of stderr, each"),
    ("--file-size", "file_size_kib", "KIB", "largest file it may write, in KiB"),
)


class SubmissionDirError(NixjailError):
    """DIR cannot be sent as it is."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `submit`."""
    parser = command_parser(
        subparsers, "submit", summary="send a directory as a submission and show its result",
        description="Send DIR (shell.nix, run.sh, optional compile.sh and other files)\n"
        "to the nixjail API, wait for it to end, print the program's output and the\n"
        "stage table, and exit with the program's exit code or one of nixjail's (below).",
        epilog=SUBMISSION_EPILOG)
    parser.add_argument("directory", metavar="DIR", type=Path)
    parser.add_argument("--include-hidden", action="store_true",
                        help="also send hidden files and directories (names starting with "
                        "'.', such as .env or .git/), which are left out by default")
    parser.add_argument("--stdin", metavar="FILE",
                        help="file given to run.sh on its standard input ('-' for this "
                        "command's own standard input)")
    parser.add_argument("--environment", metavar="NAME",
                        help="use the server's catalog environment NAME (nixjail "
                        "environments lists them) instead of DIR's shell.nix")
    parser.add_argument("--arg", metavar="ARG", action="append", default=[], dest="args",
                        help="an argument for run.sh ($1, $2, ... in order); repeatable")
    judging = parser.add_argument_group(
        "test cases", f"DIR/{TESTS_DIR}/NAME.in and NAME.out pairs are sent as test cases "
        "(not as files): compile.sh runs once, run.sh once per case.")
    judging.add_argument("--checker", choices=[k.value for k in CheckerKind
                                               if k is not CheckerKind.custom],
                         help="how output is compared (default: lines; DIR's check.sh "
                         "makes a custom checker)")
    judging.add_argument("--stop-on-failure", action="store_true",
                         help="skip the cases after the first that is not accepted")
    limits = parser.add_argument_group(
        "limits", "The flags below apply to the run stage; server defaults fill in the rest.")
    for flag, field, metavar, what in RUN_LIMIT_FLAGS:
        limits.add_argument(flag, metavar=metavar, dest=f"run_{field}", help=what)
    limits.add_argument("--limit", metavar="STAGE.FIELD=VALUE", action="append", default=[],
                        type=_limit_item,
                        help=f"any stage's limit (stages: {', '.join(STAGES)}; fields: "
                        f"{', '.join(LIMIT_FIELDS)}); repeatable")
    parser.add_argument("--no-cache", action="store_true",
                        help="build the environment inside the submission's own container "
                        "instead of the shared cache")
    parser.add_argument("--json", action="store_true",
                        help="print only the final submission as JSON")
    parser.add_argument("--no-wait", action="store_true",
                        help="print the id and status once queued, and exit 0")
    parser.add_argument("--timeout", metavar="S", type=positive_float,
                        help="give up waiting after S seconds (the submission goes on; "
                        "exit 75)")
    add_program_exit_code_option(parser)
    add_api_options(parser)
    parser.set_defaults(func=api_command(run))


def _limit_item(text: str) -> tuple[str, str, str]:
    key, sep, value = text.partition("=")
    stage, dot, field = key.strip().partition(".")
    if not sep or not dot:
        raise argparse.ArgumentTypeError(f"expected STAGE.FIELD=VALUE, got {text!r}")
    if stage not in STAGES:
        raise argparse.ArgumentTypeError(
            f"unknown stage {stage!r} (one of: {', '.join(STAGES)})")
    if field not in LIMIT_FIELDS:
        raise argparse.ArgumentTypeError(
            f"unknown limit {field!r} (one of: {', '.join(LIMIT_FIELDS)})")
    return stage, field, value.strip()


# -- building the request ------------------------------------------------------


def _encode(data: bytes) -> str | FileContent:
    """Text stays text; anything that is not UTF-8 (or holds NUL) goes as base64."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or "\x00" in text:
        return FileContent(content=base64.b64encode(data).decode("ascii"),
                           encoding=FileEncoding.base64)
    return text


def _sent_size(content: str | FileContent) -> int:
    return len(content.encode() if isinstance(content, str) else content.content)


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"


class DirectoryContents(NamedTuple):
    scripts: dict[str, str]
    files: dict[str, Any]
    hidden: list[str]  # what was left out, relative to DIR; directories end in '/'


def _hidden(name: str) -> bool:
    return name.startswith(".")


def read_directory(directory: Path, *, include_hidden: bool = False,
                   max_bytes: int = MAX_FILES_BYTES) -> DirectoryContents:
    """The scripts (`shell.nix`, `compile.sh`, `run.sh`) and the other files of `directory`.

    Every regular file under it counts, recursively. Hidden files and
    directories (a name starting with '.') are left out unless
    `include_hidden`: they are where secrets live (`.env`, `.netrc`, `.git/`).
    A symlink is followed when it stays inside `directory` and refused when it
    leads outside, so nothing beyond what the user chose to send ever leaves
    the machine.
    """
    root = directory.resolve()
    if not root.is_dir():
        raise SubmissionDirError(f"{directory} is not a directory")
    scripts: dict[str, str] = {}
    files: dict[str, str | FileContent] = {}
    hidden: list[str] = []
    total = 0
    for current, dirnames, filenames in os.walk(root):
        here = Path(current)
        if not include_hidden:
            hidden += sorted((here / d).relative_to(root).as_posix() + "/"
                             for d in dirnames if _hidden(d))
            hidden += sorted((here / f).relative_to(root).as_posix()
                             for f in filenames if _hidden(f))
            dirnames[:] = [d for d in dirnames if not _hidden(d)]
            filenames = [f for f in filenames if not _hidden(f)]
        # Sorted, so a submission's files go in the same order every time.
        dirnames.sort()
        for name in list(dirnames):
            if (here / name).is_symlink():
                _inside(root, here / name, directory)
                raise SubmissionDirError(
                    f"{_shown(directory, root, here / name)} is a symlink to a directory; "
                    "replace it with the files themselves")
        for name in sorted(filenames):
            path = here / name
            shown = _shown(directory, root, path)
            target = _inside(root, path, directory) if path.is_symlink() else path
            if not target.is_file():
                raise SubmissionDirError(f"{shown} is not a regular file")
            size = target.stat().st_size
            if size > max_bytes:
                raise SubmissionDirError(
                    f"{shown} is {_mib(size)}; a submission carries at most {_mib(max_bytes)}")
            data = target.read_bytes()
            relative = path.relative_to(root).as_posix()
            if relative in SCRIPTS:
                try:
                    scripts[relative] = data.decode("utf-8")
                except UnicodeDecodeError:
                    raise SubmissionDirError(f"{shown} is not UTF-8 text") from None
                continue
            files[relative] = _encode(data)
            total += _sent_size(files[relative])
            if total > max_bytes:
                raise SubmissionDirError(
                    f"the files of {directory} add up to more than {_mib(max_bytes)}, "
                    "the most a submission carries")
    return DirectoryContents(scripts, files, sorted(hidden))


def split_tests(files: dict[str, Any], directory: Path) -> list[dict[str, Any]]:
    """Take `tests/NAME.in` and `tests/NAME.out` out of `files` as test cases,
    in the order of their names; a lone `.in` has no expected output (it is
    then judged by its run alone), a lone `.out` reads empty input."""
    names: dict[str, dict[str, Any]] = {}
    for path in [p for p in files if p.startswith(f"{TESTS_DIR}/")]:
        name, dot, suffix = path.removeprefix(f"{TESTS_DIR}/").rpartition(".")
        if not dot or "/" in name or suffix not in ("in", "out"):
            continue  # anything else under tests/ is an ordinary file
        case = names.setdefault(name, {"name": name})
        case["stdin" if suffix == "in" else "expected_output"] = files.pop(path)
    if len(names) == 0 and any(p.startswith(f"{TESTS_DIR}/") for p in files):
        print(f"nixjail: {directory}/{TESTS_DIR} holds no NAME.in or NAME.out: it is sent "
              "as ordinary files", file=sys.stderr)
    return [names[name] for name in sorted(names)]


def _shown(directory: Path, root: Path, path: Path) -> str:
    return str(directory / path.relative_to(root))


def _inside(root: Path, link: Path, directory: Path) -> Path:
    target = link.resolve()
    if not target.is_relative_to(root):
        raise SubmissionDirError(
            f"{_shown(directory, root, link)} is a symlink to {target}, outside {directory}; "
            "only files inside the directory are sent")
    return target


def _read_stdin(name: str | None) -> str | FileContent:
    if name is None:
        return ""
    try:
        data = sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
    except OSError as exc:
        raise InvalidInput("--stdin", f"cannot read {name}: {exc.strerror}") from None
    return _encode(data)


def _limits(args: argparse.Namespace) -> dict[str, dict[str, str]]:
    limits: dict[str, dict[str, str]] = {}
    for stage, field, value in args.limit:
        limits.setdefault(stage, {})[field] = value
    for _flag, field, _metavar, _what in RUN_LIMIT_FLAGS:
        value = getattr(args, f"run_{field}")
        if value is not None:
            limits.setdefault("run", {})[field] = value
    return limits


def build_request(args: argparse.Namespace) -> SubmissionRequest:
    """The request DIR and the flags describe, checked against the contract."""
    scripts, files, hidden = read_directory(args.directory, include_hidden=args.include_hidden)
    if hidden:
        print(f"nixjail: left out {len(hidden)} hidden "
              f"{'entry' if len(hidden) == 1 else 'entries'} of {args.directory} "
              f"(--include-hidden sends them): {', '.join(hidden)}", file=sys.stderr)
    environment = getattr(args, "environment", None)
    for name in ("shell.nix", "run.sh") if environment is None else ():
        if name not in scripts:
            raise SubmissionDirError(f"{args.directory} has no {name} (or give --environment)")
    tests = split_tests(files, args.directory)
    data: dict[str, Any] = {
        "run_sh": scripts.get("run.sh"),
        "compile_sh": scripts.get("compile.sh"),
        "files": files,
        "stdin": _read_stdin(args.stdin),
        "args": getattr(args, "args", []),
        "limits": _limits(args),
        "cache": not args.no_cache,
    }
    if environment is None:
        data["shell_nix"] = scripts["shell.nix"]
    else:
        data["environment"] = environment
    if "check.sh" in scripts:
        data["checker"] = {"kind": "custom", "check_sh": scripts["check.sh"]}
    elif getattr(args, "checker", None):
        data["checker"] = {"kind": args.checker}
    if tests:
        data["tests"] = tests
        data["stop_on_failure"] = getattr(args, "stop_on_failure", False)
    try:
        return SubmissionRequest.model_validate(data)
    except ValidationError as exc:
        # Refused here with the same words the server would use, before uploading.
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "request"
        raise InvalidInput(field, first["msg"]) from None


# -- showing progress and results -----------------------------------------------


def describe(stage: str, result: StageResult) -> str:
    """One line for a stage result, e.g. `dependencies: ok (cached, 120 ms)`."""
    if result.status is StageStatus.skipped:
        return f"{stage}: skipped"
    details = []
    if result.cached:
        details.append("cached")
    if result.status is StageStatus.signaled and result.signal is not None:
        details.append(f"signal {result.signal}")
    elif result.status is not StageStatus.ok and result.exit_code is not None:
        details.append(f"exit {result.exit_code}")
    details.append(f"{result.wall_time_ms} ms")
    return f"{stage}: {result.status} ({', '.join(details)})"


def running_stage(submission: Submission) -> str | None:
    """The stage under way, if one is."""
    if submission.status is SubmissionStatus.building:
        return "dependencies"
    if submission.status is SubmissionStatus.running:
        return next((s for s in ("compile", "run") if getattr(submission.stages, s) is None),
                    None)
    return None


class Progress:
    """Prints each stage's result once as it arrives; on a terminal, also what runs now."""

    def __init__(self, out: TextIO, *, interactive: bool, quiet: bool = False) -> None:
        self.out = out
        self.interactive = interactive and not quiet
        self.quiet = quiet
        self.shown: set[str] = set()
        self.last_activity: str | None = None

    def update(self, submission: Submission) -> None:
        if self.quiet:
            return
        for stage in STAGES:
            result = getattr(submission.stages, stage)
            if result is not None and stage not in self.shown:
                self.shown.add(stage)
                print(describe(stage, result), file=self.out, flush=True)
        if not self.interactive or submission.status.ended:
            return
        stage = running_stage(submission)
        activity = f"{stage}: running…" if stage else f"{submission.status}…"
        if activity != self.last_activity:
            self.last_activity = activity
            print(activity, file=self.out, flush=True)


def aligned(rows: list[tuple[str, ...]]) -> list[str]:
    """`rows` as lines, each column padded to its widest cell."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            .rstrip() for row in rows]


def summary(submission: Submission) -> str:
    """The table of stage results printed after the program's output."""
    rows = [("stage", "status", "exit", "wall", "cpu", "memory")]
    for stage in STAGES:
        result: StageResult | None = getattr(submission.stages, stage)
        if result is None:
            rows.append((stage, "-", "", "", "", ""))
            continue
        status = str(result.status) + (" (cached)" if result.cached else "")
        if result.status is StageStatus.skipped:
            rows.append((stage, status, "", "", "", ""))
            continue
        code = (f"sig {result.signal}" if result.signal is not None
                else "" if result.exit_code is None else str(result.exit_code))
        rows.append((stage, status, code, f"{result.wall_time_ms} ms",
                     f"{result.cpu_time_ms} ms", f"{result.memory_kib} KiB"))
    lines = aligned(rows)
    ending = f"submission {submission.id}: {submission.status}"
    if submission.error:
        ending += f" ({submission.error})"
    return "\n".join([*lines, ending])


def case_table(cases: list[CaseResult | None]) -> str:
    """One row per test case: its name, verdict, times and the checker's message."""
    rows = [("case", "verdict", "status", "wall", "cpu", "memory", "message")]
    for index, case in enumerate(cases):
        if case is None:
            rows.append((str(index), "-", "", "", "", "", ""))
            continue
        message = case.message.strip().splitlines()[0] if case.message.strip() else ""
        rows.append((case.name or str(index), str(case.verdict), str(case.status),
                     f"{case.wall_time_ms} ms", f"{case.cpu_time_ms} ms",
                     f"{case.memory_kib} KiB", message[:80]))
    return "\n".join(aligned(rows))


def _write_output(content: str, encoding: FileEncoding, out: TextIO) -> None:
    """An output as the program wrote it: base64 goes out as its bytes."""
    if encoding is not FileEncoding.base64:
        out.write(content)
        return
    out.flush()
    data = base64.b64decode(content)
    if hasattr(out, "buffer"):
        out.buffer.write(data)
        out.buffer.flush()
    else:
        out.write(data.decode("utf-8", errors="replace"))


def show_result(submission: Submission, stdout: TextIO, stderr: TextIO) -> None:
    """The program's own output (or the table of its test cases), what failed
    if something did, then the summary."""
    run_result = submission.stages.run
    if submission.tests is not None:
        print(case_table(submission.tests), file=stdout)
        if submission.judgement is not None:
            judged = submission.judgement
            print(f"verdict: {judged.verdict} ({judged.passed} of {judged.total} accepted)",
                  file=stdout)
        stdout.flush()
    if run_result is not None:
        _write_output(run_result.stdout, run_result.stdout_encoding, stdout)
        stdout.flush()
        _write_output(run_result.stderr, run_result.stderr_encoding, stderr)
        if run_result.stdout_truncated or run_result.stderr_truncated:
            print("nixjail: the program's output was cut at its output limit", file=stderr)
    for stage in ("dependencies", "compile"):
        result: StageResult | None = getattr(submission.stages, stage)
        if result is None or result.status in (StageStatus.ok, StageStatus.skipped):
            continue
        print(f"--- {stage} failed: {result.status}", file=stderr)
        for text in (result.stdout, result.stderr):
            if text:
                stderr.write(text if text.endswith("\n") else text + "\n")
    print(summary(submission), file=stderr)
    stderr.flush()


# -- the command ----------------------------------------------------------------------


def _transient(exc: NixjailError) -> bool:
    """A failure the next poll may not meet: the API restarting, or overloaded."""
    return isinstance(exc, ApiUnavailable) or (
        isinstance(exc, ApiError) and exc.status in (502, 503, 504))


class _Retry:
    """Polling is idempotent, so ride out an API restart for a while before giving up."""

    def __init__(self) -> None:
        self.failing_since: float | None = None

    def reset(self) -> None:
        self.failing_since = None

    def allows(self, deadline: float | None) -> bool:
        now = time.monotonic()
        self.failing_since = self.failing_since or now
        if now - self.failing_since >= RETRY_FOR_S:
            return False
        pause = RETRY_PAUSE_S if deadline is None else min(RETRY_PAUSE_S, deadline - now)
        if pause <= 0:
            return False
        time.sleep(pause)
        return True


def follow(client: Client, submission: Submission, progress: Progress,
           deadline: float | None) -> Submission:
    """Long-poll until the submission ends or the deadline passes; the last state seen."""
    poll_s = POLL_INTERACTIVE_S if progress.interactive else POLL_QUIET_S
    retry = _Retry()
    progress.update(submission)
    while not submission.status.ended:
        wait_s = poll_s
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            wait_s = min(wait_s, remaining)
        try:
            submission = client.get(submission.id, wait_s=wait_s)
        except (ApiUnavailable, ApiError) as exc:
            if not _transient(exc) or not retry.allows(deadline):
                raise
            continue
        retry.reset()
        if not submission.status.ended:
            progress.update(submission)  # the summary table shows the rest
    return submission


def run(args: argparse.Namespace) -> int:
    """Submit DIR, then (unless --no-wait) wait for it and show its result."""
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    request = build_request(args)
    client = client_from(args)
    submission = client.submit(request)
    if args.no_wait:
        if args.json:
            print(submission.model_dump_json(indent=2))
        else:
            print(f"{submission.id} {submission.status}")
        return 0
    # Progress niceties only where someone watches them as they come: the
    # terminal that stderr, where progress goes, is shown on.
    progress = Progress(sys.stderr, interactive=sys.stderr.isatty(), quiet=args.json)
    if progress.interactive:
        print(f"submission {submission.id}", file=sys.stderr, flush=True)
    try:
        submission = follow(client, submission, progress, deadline)
    except KeyboardInterrupt:
        print(f"\nnixjail: stopped waiting; submission {submission.id} goes on "
              f"(nixjail status {submission.id})", file=sys.stderr)
        return ExitCode.GAVE_UP
    if args.json:
        print(submission.model_dump_json(indent=2))
    if not submission.status.ended:
        print(f"nixjail: gave up waiting after {args.timeout:g} s; submission "
              f"{submission.id} is still {submission.status} "
              f"(nixjail status {submission.id})", file=sys.stderr)
    elif not args.json:
        show_result(submission, sys.stdout, sys.stderr)
    return for_submission(submission, program_exit_code=args.program_exit_code)
