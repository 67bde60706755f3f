"""The Piston v2 front end: Piston's API over the environment catalog.

A catalog environment with a `piston` mapping is a Piston runtime (a
language, a version, aliases); `POST /api/v2/execute` becomes a nixjail
submission of that environment, waited for and answered in Piston's shape
at once, as Piston does. Errors are `{"message": "..."}`. docs/compat.md
says what is supported and how each field maps.
"""

from __future__ import annotations

import base64
import binascii
import math
import signal as signals
from typing import Any, Final, TypeGuard

import falcon
from pydantic import TypeAdapter, ValidationError

from nixjail.api.errors import ApiError
from nixjail.api.media import parse_json, read_body
from nixjail.api.schemas import FieldError
from nixjail.compat.common import (
    CompatContext,
    CompatResource,
    NoWaitSlot,
    QueueFull,
    request_for_source,
    respond_json,
    run_to_end,
    stage_bytes,
)
from nixjail.compat.piston_versions import newest
from nixjail.models import (
    RelativePath,
    StageResult,
    StageStatus,
    Submission,
    SubmissionRequest,
    SubmissionStatus,
)
from nixjail.settings import CatalogEnvironment, Settings

FRONT_END: Final = "piston"
MEDIA_TYPES = (falcon.MEDIA_JSON, "text/plain")  # Piston's JavaScript client sends text/plain
ENCODINGS = ("utf8", "base64", "hex")
MIB = 1024 * 1024
MAX_ECHO_CHARS = 100  # of a language or version a refusal repeats
# Piston's limits (milliseconds, bytes) and the nixjail stage limit each sets.
LIMITS = {
    "compile_timeout": ("compile", "wall_time_s"),
    "compile_cpu_time": ("compile", "cpu_time_s"),
    "compile_memory_limit": ("compile", "memory_mib"),
    "run_timeout": ("run", "wall_time_s"),
    "run_cpu_time": ("run", "cpu_time_s"),
    "run_memory_limit": ("run", "memory_mib"),
}
# nixjail's fields as a Piston client names them, for refusals.
FIELD_NAMES = {
    **{f"limits.{stage}.{limit}": name for name, (stage, limit) in LIMITS.items()},
    "files": "files",
    "stdin": "stdin",
    "args": "args",
    "environment": "language",
    "run_sh": "language",
    "compile_sh": "language",
}
_FILE_NAME = TypeAdapter(RelativePath)


def error_body(status: int, description: str, errors: list[FieldError]) -> Any:
    """Piston's one shape of every error."""
    return {"message": description}


def _error(status: int, message: str, field: str = "request",
           headers: dict[str, str] | None = None) -> ApiError:
    return ApiError(status, "piston", message, [FieldError(field=field, reason=message)],
                    headers=headers)


# -- the runtimes -------------------------------------------------------------------

def runtimes(settings: Settings) -> list[CatalogEnvironment]:
    """Every catalog environment offered as a Piston runtime, in catalog order."""
    return [entry for entry in settings.environments if entry.piston is not None]


def find_runtime(settings: Settings, language: str,
                 version: str | None) -> CatalogEnvironment | None:
    """The runtime Piston picks: `language` by its name or an alias, the newest
    version `version` (a range; None: any) takes, compared as versions.
    ValueError when `version` is no version or range."""
    named = [entry for entry in runtimes(settings) if entry.piston and (
        entry.piston.language == language or language in entry.piston.aliases)]
    chosen = newest([entry.piston.version for entry in named if entry.piston], version)
    if chosen is None:
        return None
    # The runtime of that name before one of that alias, as the catalog lists them.
    return min((entry for entry in named if entry.piston and entry.piston.version == chosen),
               key=lambda entry: entry.piston is None or entry.piston.language != language)


# -- reading a request --------------------------------------------------------------

def _is_text(value: Any) -> TypeGuard[str]:
    """A JSON string that UTF-8 can carry (not a lone surrogate, "\\ud800")."""
    if not isinstance(value, str):
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


class _Faults:
    """Every fault of one request, each in Piston's words."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def add(self, field: str, message: str) -> None:
        self.errors.append(FieldError(field=field, reason=message))

    def raise_any(self) -> None:
        if self.errors:
            raise ApiError(400, "piston", "; ".join(e.reason for e in self.errors),
                           self.errors)


def _echo(text: str) -> str:
    """The client's own text in a message, cut short: a message is no mirror."""
    return text if len(text) <= MAX_ECHO_CHARS else text[:MAX_ECHO_CHARS] + "…"


def _number_text(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


def _limit(body: dict[str, Any], name: str, most: float, faults: _Faults) -> float | None:
    """A limit in Piston's unit; None when absent, 0 or -1 (the default)."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        faults.add(name, f"If specified, {name} must be a number")
        return None
    # Only a float may be infinite; a 400-digit integer has no float at all,
    # so it is compared as it is.
    if isinstance(value, float) and not math.isfinite(value):
        faults.add(name, f"If specified, {name} must be a number")
        return None
    if value in (0, -1):
        return None
    if value < 0:
        faults.add(name, f"{name} must be non-negative (or -1: the default)")
        return None
    if value > most:
        faults.add(name, f"{name} cannot exceed the configured limit of {_number_text(most)}")
        return None
    return value


def _limits(settings: Settings, body: dict[str, Any],
            faults: _Faults) -> dict[str, dict[str, Any]]:
    limits: dict[str, dict[str, Any]] = {}
    for name, (stage, limit) in LIMITS.items():
        highest = getattr(getattr(settings.limits_max, stage), limit)
        most = highest * MIB if limit == "memory_mib" else highest * 1000
        value = _limit(body, name, most, faults)
        if value is None:
            continue
        limits.setdefault(stage, {})[limit] = (
            max(1, math.ceil(value / MIB)) if limit == "memory_mib" else value / 1000)
    return limits


def _decode(content: str, encoding: str) -> bytes:
    """A file's bytes; ValueError when the content is not of its encoding."""
    if encoding == "utf8":
        return content.encode()
    if encoding == "hex":
        return binascii.unhexlify(content)
    # Standard or URL-safe, padded or not: what Piston's decoder takes.
    compact = "".join(content.split()).translate(str.maketrans("-_", "+/")).rstrip("=")
    return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)


def _files(body: dict[str, Any], faults: _Faults) -> list[tuple[str | None, bytes]]:
    """The files as (name, bytes); the first one's name is None (it is the main one)."""
    files = body.get("files")
    if not isinstance(files, list):
        faults.add("files", "files is required as an array")
        return []
    if not files:
        faults.add("files", "files must hold at least one file (the first is the one run)")
        return []
    taken: list[tuple[str | None, bytes]] = []
    for index, item in enumerate(files):
        where = f"files[{index}]"
        if not isinstance(item, dict):
            faults.add(where, f"{where} must be an object with a content")
            continue
        content, name, encoding = item.get("content"), item.get("name"), item.get("encoding")
        if not _is_text(content):
            faults.add(f"{where}.content", f"{where}.content is required as a string")
            continue
        encoding = "utf8" if encoding is None else encoding
        if encoding not in ENCODINGS:
            faults.add(f"{where}.encoding", f"{where}.encoding must be one of "
                       f"{', '.join(ENCODINGS)}")
            continue
        try:
            data = _decode(content, encoding)
        except (ValueError, binascii.Error):
            faults.add(f"{where}.content", f"{where}.content is not valid {encoding}")
            continue
        if index == 0:
            taken.append((None, data))  # whatever its name: it becomes the main file
            continue
        if name is None:
            name = f"file{index}.code"  # Piston's name for a file without one
        if not _is_text(name):
            faults.add(f"{where}.name", f"{where}.name must be a string")
            continue
        try:
            name = _FILE_NAME.validate_python(name)
        except ValidationError as exc:
            reason = exc.errors(include_url=False)[0]["msg"].removeprefix("Value error, ")
            faults.add(f"{where}.name", f"{where}.name {_echo(name)!r}: {reason}")
            continue
        if any(name == other for other, _ in taken):
            faults.add(f"{where}.name", f"{where}.name {name!r} is given twice")
            continue
        taken.append((name, data))
    return taken


def build_request(settings: Settings, body: Any) -> tuple[CatalogEnvironment,
                                                           SubmissionRequest]:
    """The runtime and the nixjail request of one Piston execute body;
    ApiError (400, in Piston's words) when it is refused."""
    if not isinstance(body, dict):
        raise _error(400, "the body must be a JSON object", "body")
    faults = _Faults()
    language, version = body.get("language"), body.get("version")
    if not _is_text(language) or not language:
        faults.add("language", "language is required as a string")
        language = None
    if version is not None and (not _is_text(version) or not version):
        faults.add("version", "version must be a string (a version such as 3.10.0 or a "
                   "range such as 3.x), or left out for the newest")
        version = None
    files = _files(body, faults)
    stdin = body.get("stdin")
    if stdin is not None and not _is_text(stdin):
        faults.add("stdin", "stdin must be a string")
        stdin = None
    args = body.get("args")
    if args is not None and not (isinstance(args, list) and all(_is_text(a) for a in args)):
        faults.add("args", "args must be an array of strings")
        args = None
    limits = _limits(settings, body, faults)
    entry = None
    if language is not None:
        runtime = f"{_echo(language)}-{_echo(version or '*')}"
        try:
            entry = find_runtime(settings, language, version)
        except ValueError as exc:
            faults.add("version", f"{runtime} runtime is unknown: version {exc}")
        else:
            if entry is None:
                faults.add("version" if version else "language", f"{runtime} runtime is unknown")
    faults.raise_any()
    assert entry is not None and entry.piston is not None and files
    stdin_text = stdin or ""
    if not stdin_text.endswith("\n"):
        stdin_text += "\n"  # as Piston does: a program reading a line finds its end
    (_, source), *others = files
    main_file = entry.main_file
    for index, (name, _) in enumerate(others, start=1):
        if name == main_file:
            faults.add(f"files[{index}].name", f"files[{index}].name {name!r} is the name "
                       "the first file takes: it is the one run")
    faults.raise_any()
    try:
        request = request_for_source(
            settings, entry, source,
            extra_files={name: data for name, data in others if name is not None},
            stdin=stdin_text.encode(),
            args=args,
            limits=limits or None,
            note=f"piston {entry.piston.language}-{entry.piston.version}",
            field_names=FIELD_NAMES)
    except ApiError as refused:
        # The same refusal in Piston's status and shape: 400, {"message"}.
        raise ApiError(400, "piston", refused.description or "the request is refused",
                       getattr(refused, "errors", [])) from None
    return entry, request


# -- the answer ---------------------------------------------------------------------

def _signal_name(number: int | None) -> str | None:
    if number is None:
        return None
    try:
        return signals.Signals(number).name
    except ValueError:
        return None


def _stage(result: StageResult, reason: str | None) -> dict[str, Any]:
    """One stage as Piston reports it (docs/compat.md, "Piston v2")."""
    stdout = stage_bytes(result, "stdout").decode(errors="replace")
    stderr = stage_bytes(result, "stderr").decode(errors="replace")
    code: int | None = None
    signal = _signal_name(result.signal)
    message: str | None = None
    status: str | None = None
    kind = result.status
    if kind is StageStatus.ok:
        code = result.exit_code
    elif kind is StageStatus.nonzero_exit:
        code, status = result.exit_code, "RE"
        message = f"Exited with error status {result.exit_code}"
    elif kind is StageStatus.signaled:
        status, message = "SG", f"Caught fatal signal {result.signal}"
    elif kind is StageStatus.time_limit:
        status, message, signal = "TO", "Time limit exceeded", signal or "SIGKILL"
    elif kind is StageStatus.memory_limit:
        status, message, signal = "SG", "Memory limit exceeded", signal or "SIGKILL"
    elif kind is StageStatus.output_limit:
        stream = "stderr" if result.stderr_truncated and not result.stdout_truncated \
            else "stdout"
        status = "EL" if stream == "stderr" else "OL"
        message, signal = f"{stream} length exceeded", signal or "SIGKILL"
    else:
        status, message = "XX", reason or "nixjail could not run this stage"
    return {"stdout": stdout, "stderr": stderr, "output": stdout + stderr, "code": code,
            "signal": signal, "message": message, "status": status,
            "memory": result.memory_kib * 1024, "cpu_time": result.cpu_time_ms,
            "wall_time": result.wall_time_ms}


def _not_run(reason: str) -> dict[str, Any]:
    """A stage nixjail could not run: Piston's internal error."""
    return {"stdout": "", "stderr": "", "output": "", "code": None, "signal": None,
            "message": reason, "status": "XX", "memory": None, "cpu_time": None,
            "wall_time": None}


def _ran(result: StageResult | None) -> bool:
    return result is not None and result.status is not StageStatus.skipped


def _failure(submission: Submission) -> str | None:
    """Why nixjail, not the program, ended the submission; None when it did not."""
    if submission.status is SubmissionStatus.error:
        return submission.error or "nixjail failed to run it"
    if submission.status is SubmissionStatus.cancelled:
        return "cancelled"
    deps = submission.stages.dependencies
    if deps is not None and deps.status not in (StageStatus.ok, StageStatus.skipped):
        return "the environment could not be built"
    return None


def render(entry: CatalogEnvironment, submission: Submission) -> dict[str, Any]:
    """The ended submission as Piston's execute answers: `compile` only for a
    runtime that compiles; `run` is the compile stage when compiling failed,
    as Piston gives it."""
    assert entry.piston is not None
    reason = _failure(submission)
    answer: dict[str, Any] = {"language": entry.piston.language,
                              "version": entry.piston.version}
    compile_result, run_result = submission.stages.compile, submission.stages.run
    compiled = submission.request.compile_sh is not None
    if compiled:
        answer["compile"] = _stage(compile_result, reason) if compile_result is not None \
            and _ran(compile_result) else _not_run(reason or "the compile stage did not run")
    if run_result is not None and _ran(run_result):
        answer["run"] = _stage(run_result, reason)
    elif compiled and reason is None and _ran(compile_result):
        answer["run"] = answer["compile"]
    else:
        answer["run"] = _not_run(reason or "the program did not run")
    return answer


# -- resources ----------------------------------------------------------------------

class _Resource(CompatResource):
    def __init__(self, ctx: CompatContext) -> None:
        super().__init__(ctx, FRONT_END)


class Runtimes(_Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        respond_json(resp, [{"language": entry.piston.language, "version": entry.piston.version,
                         "aliases": list(entry.piston.aliases)}
                        for entry in runtimes(self.ctx.settings) if entry.piston])


class Execute(_Resource):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        settings = self.ctx.settings
        body = parse_json(read_body(req, settings.api.max_body_bytes, media_types=MEDIA_TYPES))
        entry, request = build_request(settings, body)
        try:
            ran = run_to_end(self.ctx, request, self.caller(req).tenant,
                             settings.api.max_wait_s, resp)
        except NoWaitSlot as none:
            raise _error(503, "this server waits for no run (api.max_wait_s is 0), and "
                         "Piston's execute must" if none.waits_for_none else
                         "too many runs are being waited for; try again shortly",
                         "request", headers={"Retry-After": "1"}) from None
        except QueueFull as full:
            raise _error(503, f"the queue is full; try again in {full.retry_after_s} s",
                         "queue", headers={"Retry-After": str(full.retry_after_s)}) from None
        if ran.cancelled:
            # Piston's client gets one answer and never asks again.
            raise _error(504, f"the run did not end within {_number_text(ran.waited_s)} s "
                         f"(the server's api.max_wait_s); submission {ran.submission.id} "
                         "is cancelled", "request")
        respond_json(resp, render(entry, ran.submission))


def mount(app: falcon.App, ctx: CompatContext) -> None:
    """Piston's routes under `compat.piston.prefix`."""
    prefix = ctx.settings.compat.piston.prefix
    app.add_route(f"{prefix}/api/v2/runtimes", Runtimes(ctx))
    app.add_route(f"{prefix}/api/v2/execute", Execute(ctx))


__all__ = ["build_request", "error_body", "find_runtime", "mount", "render", "runtimes"]
