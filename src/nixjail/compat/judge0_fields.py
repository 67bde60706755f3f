"""Judge0 CE's view of a nixjail submission: its statuses, and every field of
a submission as Judge0 names and formats it (docs/compat.md, "Judge0")."""

from __future__ import annotations

import base64
import json
import signal as signals
from datetime import datetime
from typing import Any

from nixjail.compat.common import stage_bytes
from nixjail.models import (
    CaseResult,
    StageResult,
    StageStatus,
    Submission,
    SubmissionStatus,
    Verdict,
    data_bytes,
)
from nixjail.settings import CatalogEnvironment, Settings

STATUSES: dict[int, str] = {
    1: "In Queue", 2: "Processing", 3: "Accepted", 4: "Wrong Answer",
    5: "Time Limit Exceeded", 6: "Compilation Error", 7: "Runtime Error (SIGSEGV)",
    8: "Runtime Error (SIGXFSZ)", 9: "Runtime Error (SIGFPE)", 10: "Runtime Error (SIGABRT)",
    11: "Runtime Error (NZEC)", 12: "Runtime Error (Other)", 13: "Internal Error",
    14: "Exec Format Error",
}
IN_QUEUE, PROCESSING, ACCEPTED, WRONG_ANSWER, TIME_LIMIT, COMPILATION_ERROR = 1, 2, 3, 4, 5, 6
NZEC, OTHER, INTERNAL_ERROR, EXEC_FORMAT_ERROR = 11, 12, 13, 14
# The signals Judge0 gives a status of their own.
SIGNAL_STATUSES = {signals.SIGSEGV: 7, signals.SIGXFSZ: 8, signals.SIGFPE: 9,
                   signals.SIGABRT: 10}
# What a shell answers when the kernel refuses to execute a file.
EXEC_FORMAT_EXIT = 126

# The fields Judge0 answers with when a request names none.
DEFAULT_FIELDS = ("token", "time", "memory", "stdout", "stderr", "compile_output",
                  "message", "status")
# Every field `fields=*` gives, in Judge0's order. Nothing else is ever sent:
# Judge0's Python client sets each key on its own object and fails on others.
ALL_FIELDS = (
    "source_code", "language_id", "stdin", "expected_output", "stdout", "status_id",
    "created_at", "finished_at", "time", "memory", "stderr", "token", "number_of_runs",
    "cpu_time_limit", "cpu_extra_time", "wall_time_limit", "memory_limit", "stack_limit",
    "max_processes_and_or_threads", "enable_per_process_and_thread_time_limit",
    "enable_per_process_and_thread_memory_limit", "max_file_size", "compile_output",
    "exit_code", "exit_signal", "message", "wall_time", "compiler_options",
    "command_line_arguments", "redirect_stderr_to_stdout", "callback_url",
    "additional_files", "enable_network", "status", "language",
)
# Fields whose content is the program's or the client's bytes: base64 with
# base64_encoded=true, else text (refused when it is not UTF-8, as Judge0 does).
ENCODED_FIELDS = frozenset({"source_code", "stdin", "expected_output", "stdout", "stderr",
                            "compile_output", "message"})
# The first line of a Judge0 submission's scripts: what the front end reads back.
NOTE_PREFIX = "judge0 "


class NotText(ValueError):
    """A field holds bytes that are not UTF-8, and the client asked for text."""


def requested_fields(fields: str | None) -> tuple[str, ...]:
    """The fields a `fields` parameter asks for; ValueError naming the unknown ones."""
    if fields is None or not fields.strip():
        return DEFAULT_FIELDS
    names = [name.strip() for name in fields.split(",") if name.strip()]
    if "*" in names:
        return ALL_FIELDS
    unknown = [name for name in names if name not in ALL_FIELDS]
    if unknown:
        raise ValueError(f"invalid fields: [{', '.join(unknown)}]")
    return tuple(dict.fromkeys(names))


def timestamp(moment: datetime | None) -> str | None:
    """Judge0's form: 2024-01-01T12:00:00.000Z (UTC, milliseconds)."""
    if moment is None:
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _seconds(ms: int) -> str:
    return f"{ms / 1000:.3f}"


def _decimal(seconds: float) -> str:
    # Judge0's decimal columns come as strings ("5.0").
    return repr(float(seconds))


def note(fields: dict[str, Any]) -> str:
    """The comment line a Judge0 submission's scripts start with."""
    return NOTE_PREFIX + json.dumps(fields, ensure_ascii=True, separators=(",", ":"))


def read_note(submission: Submission) -> dict[str, Any]:
    script = submission.request.run_sh or ""
    first = script.split("\n", 1)[0]
    if not first.startswith("# " + NOTE_PREFIX):
        return {}
    try:
        value = json.loads(first[len("# " + NOTE_PREFIX):])
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _run_result(submission: Submission) -> StageResult | None:
    """The run Judge0 reports: the one test case (expected_output), else the run stage."""
    if submission.tests:
        return submission.tests[0]
    return submission.stages.run


def status_of(submission: Submission) -> tuple[int, str | None]:
    """Judge0's status id of the submission, and its `message`."""
    if submission.status is SubmissionStatus.queued:
        return IN_QUEUE, None
    if not submission.status.ended:
        return PROCESSING, None
    if submission.status is SubmissionStatus.cancelled:
        return INTERNAL_ERROR, "cancelled"
    if submission.status is SubmissionStatus.error:
        return INTERNAL_ERROR, submission.error
    deps, comp = submission.stages.dependencies, submission.stages.compile
    if deps is not None and deps.status not in (StageStatus.ok, StageStatus.skipped):
        return INTERNAL_ERROR, "the environment could not be built"
    if comp is not None and comp.status not in (StageStatus.ok, StageStatus.skipped):
        if comp.status is StageStatus.time_limit:
            return COMPILATION_ERROR, "Compilation time limit exceeded"
        return COMPILATION_ERROR, None
    run = _run_result(submission)
    if run is None:
        return INTERNAL_ERROR, "the program did not run"
    if isinstance(run, CaseResult):
        if run.verdict is Verdict.accepted:
            return ACCEPTED, None
        if run.verdict is Verdict.wrong_answer:
            return WRONG_ANSWER, run.message or None
        if run.verdict in (Verdict.checker_error, Verdict.error, Verdict.skipped):
            return INTERNAL_ERROR, run.message or f"the case ended {run.verdict.value}"
    return _run_status(run)


def _run_status(run: StageResult) -> tuple[int, str | None]:
    status = run.status
    if status is StageStatus.ok:
        return ACCEPTED, None
    if status is StageStatus.time_limit:
        return TIME_LIMIT, "Time limit exceeded"
    if status is StageStatus.memory_limit:
        return OTHER, "Memory limit exceeded"
    if status is StageStatus.output_limit:
        # Judge0's output is a file capped by max_file_size: past it, SIGXFSZ.
        return SIGNAL_STATUSES[signals.SIGXFSZ], "Output limit exceeded"
    if status is StageStatus.signaled and run.signal is not None:
        return SIGNAL_STATUSES.get(run.signal, OTHER), f"Caught fatal signal {run.signal}"
    if status is StageStatus.nonzero_exit:
        if run.exit_code == EXEC_FORMAT_EXIT and b"format error" in stage_bytes(run, "stderr"):
            return EXEC_FORMAT_ERROR, "Exec format error"
        return NZEC, f"Exited with error status {run.exit_code}"
    return INTERNAL_ERROR, "the program could not be run"


def render(submission: Submission, fields: tuple[str, ...], *, base64_encoded: bool,
           settings: Settings) -> dict[str, Any]:
    """The submission as Judge0 answers it: exactly `fields`, in Judge0's formats.
    NotText when a text field is not UTF-8 and `base64_encoded` is false."""
    values = _values(submission, settings)
    body: dict[str, Any] = {}
    for name in fields:
        value = values[name]
        if name in ENCODED_FIELDS and value is not None:
            raw = value if isinstance(value, bytes) else value.encode()
            if base64_encoded:
                value = base64.b64encode(raw).decode()
            else:
                try:
                    value = raw.decode()
                except UnicodeDecodeError:
                    raise NotText(name) from None
        body[name] = value
    return body


def entry_of(submission: Submission, settings: Settings) -> CatalogEnvironment | None:
    name = submission.request.environment
    return settings.catalog().get(name) if name else None


def _values(submission: Submission, settings: Settings) -> dict[str, Any]:
    request = submission.request
    entry = entry_of(submission, settings)
    asked = read_note(submission)
    status_id, message = status_of(submission)
    run = _run_result(submission) if submission.status.ended else None
    ran = run is not None and run.status is not StageStatus.skipped
    compile_stage = submission.stages.compile
    compile_output = b""
    if compile_stage is not None and compile_stage.status is not StageStatus.skipped:
        compile_output = stage_bytes(compile_stage, "stdout") + stage_bytes(compile_stage,
                                                                            "stderr")
    language_id = asked.get("language_id")
    if not isinstance(language_id, int):
        language_id = entry.judge0.ids[0] if entry is not None and entry.judge0 else None
    language_name = entry.judge0.name if entry is not None and entry.judge0 else None
    main_file = entry.main_file if entry is not None else next(iter(request.files), None)
    source = request.files.get(main_file) if main_file else None
    case = request.tests[0] if request.tests else None
    stdin = data_bytes(case.stdin) if case is not None else data_bytes(request.stdin)
    expected = None if case is None or case.expected_output is None \
        else data_bytes(case.expected_output)
    limits = submission.case_limits[0] if submission.case_limits else submission.limits.run
    memory_limit_kb = limits.memory_mib * 1024
    return {
        "token": submission.id,
        "source_code": None if source is None else data_bytes(source),
        "language_id": language_id,
        "language": None if language_id is None else {"id": language_id,
                                                      "name": language_name},
        "stdin": stdin or None,
        "expected_output": expected,
        "stdout": (stage_bytes(run, "stdout") or None) if ran else None,
        "stderr": (stage_bytes(run, "stderr") or None) if ran else None,
        "compile_output": compile_output or None,
        "message": message,
        "status_id": status_id,
        "status": {"id": status_id, "description": STATUSES[status_id]},
        "created_at": timestamp(submission.created_at),
        "finished_at": timestamp(submission.finished_at),
        "time": _seconds(run.cpu_time_ms) if ran and run else None,
        "wall_time": _seconds(run.wall_time_ms) if ran and run else None,
        "memory": run.memory_kib if ran and run else None,
        "exit_code": run.exit_code if ran and run else None,
        "exit_signal": run.signal if ran and run else None,
        "number_of_runs": 1,
        "cpu_time_limit": _decimal(limits.cpu_time_s),
        "cpu_extra_time": _decimal(0),
        "wall_time_limit": _decimal(limits.wall_time_s),
        "memory_limit": memory_limit_kb,
        "stack_limit": memory_limit_kb,
        "max_processes_and_or_threads": limits.processes,
        "enable_per_process_and_thread_time_limit": False,
        "enable_per_process_and_thread_memory_limit": False,
        "max_file_size": limits.file_size_kib,
        "compiler_options": asked.get("compiler_options"),
        "command_line_arguments": asked.get("command_line_arguments"),
        "redirect_stderr_to_stdout": bool(asked.get("redirect_stderr_to_stdout", False)),
        "callback_url": request.callback_url,
        # The archive is unpacked into the submission's files and not kept as such.
        "additional_files": None,
        "enable_network": False,
    }
