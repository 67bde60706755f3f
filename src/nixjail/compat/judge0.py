"""The Judge0 CE front end: Judge0's API over the environment catalog.

A catalog environment with a `judge0` mapping is a Judge0 language (one per
id); a Judge0 submission becomes a nixjail submission of that environment,
its token is the submission's id, and every answer carries Judge0's field
names only. docs/compat.md says what is supported and how each field maps.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import math
import re
import shlex
from typing import Any, Final

import falcon

from nixjail.api.errors import ApiError
from nixjail.api.media import parse_json, read_body
from nixjail.api.schemas import FieldError
from nixjail.compat.common import (
    CompatContext,
    CompatResource,
    QueueFull,
    check_room,
    request_for_source,
    respond_json,
    submit,
    wait_until_ended,
)
from nixjail.compat.judge0_fields import (
    ALL_FIELDS,
    STATUSES,
    NotText,
    note,
    render,
    requested_fields,
    status_of,
)
from nixjail.compat.judge0_zip import BadZip, unzip
from nixjail.errors import NotFound
from nixjail.models import Submission, SubmissionRequest
from nixjail.settings import CatalogEnvironment, Settings

FRONT_END: Final = "judge0"
MAX_BATCH = 20
MAX_OPTION_CHARS = 512  # compiler_options and command_line_arguments, as Judge0 caps them
# Where the compile script finds Judge0's compiler_options.
COMPILER_OPTIONS_ENV = "COMPILER_OPTIONS"
# nixjail's fields as a Judge0 client names them, for refusals.
FIELD_NAMES = {
    "limits.run.cpu_time_s": "cpu_time_limit",
    "limits.run.wall_time_s": "wall_time_limit",
    "limits.run.memory_mib": "memory_limit",
    "limits.run.processes": "max_processes_and_or_threads",
    "limits.run.file_size_kib": "max_file_size",
    "files": "additional_files",
    "args": "command_line_arguments",
    "stdin": "stdin",
    "tests[0].stdin": "stdin",
    "tests[0].expected_output": "expected_output",
    "callback_url": "callback_url",
    "compile_sh": "compiler_options",
    "run_sh": "language_id",
    "environment": "language_id",
}
NOT_TEXT = ("some attributes for this submission cannot be converted to UTF-8, use "
            "base64_encoded=true query parameter")


def error_body(status: int, description: str, errors: list[FieldError]) -> Any:
    """Judge0's shapes: a submission's invalid fields as {"field": ["reason"]}
    (422), anything else as {"error": "..."}."""
    if status == 422 and errors:
        fields: dict[str, list[str]] = {}
        for error in errors:
            fields.setdefault(error.field, []).append(error.reason)
        return fields
    return {"error": description}


def _error(status: int, message: str, field: str = "request",
           headers: dict[str, str] | None = None) -> ApiError:
    return ApiError(status, "judge0", message, [FieldError(field=field, reason=message)],
                    headers=headers)


def languages(settings: Settings) -> dict[int, CatalogEnvironment]:
    """Every Judge0 language id the catalog offers, and its environment."""
    return {language_id: entry for entry in settings.environments if entry.judge0
            for language_id in entry.judge0.ids}


# -- the configuration a client reads ------------------------------------------------

def config_info(settings: Settings) -> dict[str, Any]:
    """Every key Judge0 CE's GET /config_info has, with nixjail's real limits."""
    default, most = settings.limits_default.run, settings.limits_max.run
    compiled = sorted({entry.judge0.name for entry in settings.environments
                       if entry.judge0 and entry.compile_sh})
    return {
        "maintenance_mode": False,
        "enable_wait_result": True,
        "enable_compiler_options": True,
        "allowed_languages_for_compile_options": compiled,
        "enable_command_line_arguments": True,
        "enable_submission_delete": settings.compat.judge0.allow_delete,
        "enable_callbacks": bool(settings.callbacks.allowed_prefixes),
        "callbacks_max_tries": settings.callbacks.attempts,
        "callbacks_timeout": float(settings.callbacks.timeout_s),
        "enable_additional_files": True,
        "max_queue_size": settings.api.max_queued,
        "cpu_time_limit": float(default.cpu_time_s),
        "max_cpu_time_limit": float(most.cpu_time_s),
        "cpu_extra_time": 0.0,
        "max_cpu_extra_time": 0.0,
        "wall_time_limit": float(default.wall_time_s),
        "max_wall_time_limit": float(most.wall_time_s),
        "memory_limit": default.memory_mib * 1024,
        "max_memory_limit": most.memory_mib * 1024,
        "stack_limit": default.memory_mib * 1024,
        "max_stack_limit": most.memory_mib * 1024,
        "max_processes_and_or_threads": default.processes,
        "max_max_processes_and_or_threads": most.processes,
        "enable_per_process_and_thread_time_limit": False,
        "allow_enable_per_process_and_thread_time_limit": False,
        "enable_per_process_and_thread_memory_limit": False,
        "allow_enable_per_process_and_thread_memory_limit": False,
        "max_file_size": default.file_size_kib,
        "max_max_file_size": most.file_size_kib,
        "number_of_runs": 1,
        "max_number_of_runs": 1,
        "redirect_stderr_to_stdout": False,
        "max_extract_size": max_extract_bytes(settings) // 1024,
        "enable_batched_submissions": True,
        "max_submission_batch_size": MAX_BATCH,
        "submission_cache_duration": 0.0,
        "use_docs_as_homepage": False,
        "enable_network": False,
        "allow_enable_network": False,
    }


def max_extract_bytes(settings: Settings) -> int:
    # Half the body cap: the files are stored with the submission, as base64
    # when they are binary (a third more).
    return settings.api.max_body_bytes // 2


# -- reading a submission ----------------------------------------------------------

class _Fields:
    """A Judge0 submission body, read field by field; every fault is collected
    under the field's own name, as Judge0 answers them."""

    def __init__(self, body: Any) -> None:
        self.body = body if isinstance(body, dict) else {}
        self.errors: list[FieldError] = []

    def fault(self, field: str, reason: str) -> None:
        self.errors.append(FieldError(field=field, reason=reason))

    def present(self, name: str) -> bool:
        return self.body.get(name) is not None

    def _str(self, name: str) -> str | None:
        """The field as a string; None when absent or (a fault noted) not one."""
        value = self.body.get(name)
        if value is None:
            return None
        if not isinstance(value, str):
            self.fault(name, "must be a string")
            return None
        return value

    def text(self, name: str, *, base64_encoded: bool) -> bytes | None:
        value = self._str(name)
        if value is None:
            return None
        if not base64_encoded:
            return value.encode()
        try:
            return base64.b64decode("".join(value.split()), validate=True)
        except (binascii.Error, ValueError):
            self.fault(name, "is not valid base64 (base64_encoded=true)")
            return None

    def string(self, name: str, max_chars: int) -> str | None:
        value = self._str(name)
        if value is None:
            return None
        if len(value) > max_chars:
            self.fault(name, f"is too long (maximum is {max_chars} characters)")
            return None
        return value

    def number(self, name: str, *, most: float, integer: bool = False,
               zero: bool = False) -> float | None:
        value = self.body.get(name)
        if value is None:
            return None
        if isinstance(value, str):
            # Judge0 takes numbers as form values too ("2.5").
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fault(name, "is not a number")
            return None
        if isinstance(value, int) and value > most:
            # Before any float(): a 400-digit integer has none.
            self.fault(name, f"must be less than or equal to {_plain(most)}")
            return None
        if not math.isfinite(value):
            self.fault(name, "is not a number")
            return None
        if integer and value != int(value):
            self.fault(name, "must be an integer")
            return None
        if value < 0 or (value == 0 and not zero):
            self.fault(name, "must be greater than " + ("or equal to 0" if zero else "0"))
            return None
        if value > most:
            self.fault(name, f"must be less than or equal to {_plain(most)}")
            return None
        return value

    def flag(self, name: str) -> bool | None:
        value = self.body.get(name)
        if value is None:
            return None
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            self.fault(name, "must be true or false")
            return None
        return value


def _plain(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


def build_request(settings: Settings, body: Any, *,
                  base64_encoded: bool) -> SubmissionRequest:
    """The nixjail request of one Judge0 submission body; ApiError (422, its
    fields as Judge0 names them) when it is refused."""
    fields = _Fields(body)
    if not isinstance(body, dict):
        raise ApiError(422, "judge0", "a submission is a JSON object",
                       [FieldError(field="submission", reason="must be a JSON object")])
    most = settings.limits_max.run
    entry = None
    language_id = body.get("language_id")
    # ASCII digits only: "²" is a digit to str.isdigit, not to int().
    if isinstance(language_id, str) and re.fullmatch(r"\s*[0-9]+\s*", language_id):
        language_id = int(language_id)
    if language_id is None:
        fields.fault("language_id", "can't be blank")
    elif isinstance(language_id, bool) or not isinstance(language_id, int):
        fields.fault("language_id", "must be an integer")
    else:
        entry = languages(settings).get(language_id)
        if entry is None:
            fields.fault("language_id", f"language with id {language_id} doesn't exist")
    source = fields.text("source_code", base64_encoded=base64_encoded)
    if (source is None and not fields.present("source_code")) or source == b"":
        fields.fault("source_code", "can't be blank")
    stdin = fields.text("stdin", base64_encoded=base64_encoded)
    expected = fields.text("expected_output", base64_encoded=base64_encoded)
    compiler_options = fields.string("compiler_options", MAX_OPTION_CHARS)
    arguments = fields.string("command_line_arguments", MAX_OPTION_CHARS)
    args: list[str] | None = None
    if arguments is not None:
        try:
            args = shlex.split(arguments)
        except ValueError as exc:
            fields.fault("command_line_arguments", f"cannot be split into words: {exc}")
    if compiler_options and entry is not None and entry.compile_sh is None:
        fields.fault("compiler_options", f"language {language_id} does not allow "
                     "compiler_options: it is not compiled")
    run: dict[str, Any] = {}
    cpu = fields.number("cpu_time_limit", most=most.cpu_time_s)
    if cpu is not None:
        run["cpu_time_s"] = cpu
    # Checked, then not needed: nixjail gives no grace time (docs/compat.md).
    fields.number("cpu_extra_time", most=math.inf, zero=True)
    wall = fields.number("wall_time_limit", most=most.wall_time_s)
    if wall is not None:
        run["wall_time_s"] = wall
    memory = fields.number("memory_limit", most=most.memory_mib * 1024)
    if memory is not None:
        run["memory_mib"] = max(1, math.ceil(memory / 1024))
    # The stack is bounded by the memory limit: checked, then not needed.
    fields.number("stack_limit", most=most.memory_mib * 1024, integer=True, zero=True)
    processes = fields.number("max_processes_and_or_threads", most=most.processes,
                              integer=True)
    if processes is not None:
        run["processes"] = int(processes)
    file_size = fields.number("max_file_size", most=most.file_size_kib, integer=True)
    if file_size is not None:
        run["file_size_kib"] = int(file_size)
    runs = fields.number("number_of_runs", most=1, integer=True)
    del runs  # only 1 is taken: a submission runs once
    for name in ("enable_per_process_and_thread_time_limit",
                 "enable_per_process_and_thread_memory_limit"):
        if fields.flag(name):
            fields.fault(name, "is not allowed: nixjail limits the whole submission, "
                         "not each process")
    if fields.flag("enable_network"):
        fields.fault("enable_network", "is not allowed: nixjail runs every submission "
                     "without a network")
    redirect = bool(fields.flag("redirect_stderr_to_stdout"))
    callback_url = fields.string("callback_url", 2000)
    extra_files: dict[str, bytes] = {}
    archive = body.get("additional_files")
    if archive is not None:
        if not isinstance(archive, str):
            fields.fault("additional_files", "must be a string (a base64 zip archive)")
        else:
            try:
                extra_files = unzip(archive, max_bytes=max_extract_bytes(settings))
            except BadZip as exc:
                fields.fault("additional_files", str(exc))
    if fields.errors or entry is None or source is None:
        raise ApiError(422, "judge0", "; ".join(f"{e.field}: {e.reason}"
                                                for e in fields.errors),
                       fields.errors)
    tests = None
    if expected is not None:
        # Judge0 compares with the trailing white space of each line and the
        # blank lines at the end left out: nixjail's `lines` checker.
        tests = [{"stdin": stdin or b"", "expected_output": expected}]
    remembered = {"language_id": language_id, "compiler_options": compiler_options,
                  "command_line_arguments": arguments,
                  "redirect_stderr_to_stdout": redirect}
    return request_for_source(
        settings, entry, source,
        extra_files=extra_files,
        stdin=stdin if tests is None else None,
        args=args,
        limits={"run": run} if run else None,
        tests=tests,
        checker={"kind": "lines"} if tests else None,
        env={COMPILER_OPTIONS_ENV: compiler_options or ""} if entry.compile_sh else None,
        stderr_to_stdout=redirect,
        note=note(remembered),
        callback_url=callback_url,
        field_names=FIELD_NAMES)


# -- resources -------------------------------------------------------------------

def _query(req: falcon.Request) -> dict[str, str]:
    params = falcon.uri.parse_query_string(req.query_string, keep_blank=True, csv=False)
    # A repeated parameter counts once, its last value: as Rails reads it.
    return {name: value[-1] if isinstance(value, list) else value
            for name, value in params.items()}


def _fields(query: dict[str, str]) -> tuple[str, ...]:
    try:
        return requested_fields(query.get("fields"))
    except ValueError as exc:
        raise _error(400, str(exc), "fields") from None


def _body(req: falcon.Request, settings: Settings) -> Any:
    return parse_json(read_body(req, settings.api.max_body_bytes))


def _queue_full(full: QueueFull) -> ApiError:
    # Judge0 answers a full queue 503; Retry-After says when to come back.
    return _error(503, "queue is full", "queue",
                  headers={"Retry-After": str(full.retry_after_s)})


class _Resource(CompatResource):
    def __init__(self, ctx: CompatContext) -> None:
        super().__init__(ctx, FRONT_END)

    def _render(self, submission: Submission, fields: tuple[str, ...],
                base64_encoded: bool) -> dict[str, Any]:
        try:
            return render(submission, fields, base64_encoded=base64_encoded,
                          settings=self.ctx.settings)
        except NotText:
            raise _error(400, NOT_TEXT, "base64_encoded") from None

    def _get(self, req: falcon.Request, token: str) -> Submission:
        try:
            return self.ctx.spool.get(token, owner=self.caller(req).owner)
        except NotFound:
            raise _error(404, "Not Found", "token") from None


class Submissions(_Resource):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        query = _query(req)
        base64_encoded = query.get("base64_encoded") == "true"
        fields = _fields(query)
        body = _body(req, self.ctx.settings)
        request = build_request(self.ctx.settings, body, base64_encoded=base64_encoded)
        try:
            submission = submit(self.ctx.spool, self.ctx.settings, request,
                                self.caller(req).tenant, self.ctx.kick,
                                created=self.ctx.created)
        except QueueFull as full:
            raise _queue_full(full) from None
        body: Any = {"token": submission.id}
        if query.get("wait") == "true":
            submission = wait_until_ended(self.ctx, submission,
                                          self.ctx.settings.api.max_wait_s, resp)
            try:
                body = render(submission, fields, base64_encoded=base64_encoded,
                              settings=self.ctx.settings)
            except NotText:
                # Created all the same: Judge0 says so with the token beside the error.
                body = {"error": NOT_TEXT, "token": submission.id}
        respond_json(resp, body, 201)


class SubmissionItem(_Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, token: str) -> None:
        query = _query(req)
        fields = _fields(query)
        submission = self._get(req, token)
        respond_json(resp, self._render(submission, fields, query.get("base64_encoded") == "true"))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, token: str) -> None:
        if not self.ctx.settings.compat.judge0.allow_delete:
            raise _error(400, "delete not allowed", "method")
        fields = _fields(_query(req))
        submission = self._get(req, token)
        if not submission.status.ended:
            status_id, _ = status_of(submission)
            raise _error(400, f"submission cannot be deleted because its status is "
                         f"{status_id} ({STATUSES[status_id]})", "token")
        # As Judge0 does: base64, so the answer holds whatever the fields were.
        body = self._render(submission, fields, True)
        # Found as the caller's (`_get`) just now; ended, so nothing changes it.
        self.ctx.spool.delete(submission.id)
        respond_json(resp, body)


class Batch(_Resource):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        query = _query(req)
        base64_encoded = query.get("base64_encoded") == "true"
        body = _body(req, self.ctx.settings)
        items = body.get("submissions") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise ApiError(422, "judge0", "submissions: must be a list of submissions",
                           [FieldError(field="submissions", reason="must be a list of "
                                       "submissions")])
        if not items:
            raise _error(400, "there should be at least one submission in a batch",
                         "submissions")
        if len(items) > MAX_BATCH:
            raise _error(400, "number of submissions in a batch should be less than or "
                         f"equal to {MAX_BATCH}", "submissions")
        answers: list[Any] = []
        requests: list[tuple[int, SubmissionRequest]] = []
        for index, item in enumerate(items):
            try:
                requests.append((index, build_request(self.ctx.settings, item,
                                                      base64_encoded=base64_encoded)))
                answers.append(None)
            except ApiError as refused:
                answers.append(error_body(422, refused.description or "",
                                          getattr(refused, "errors", [])))
        if requests:
            try:
                check_room(self.ctx.spool, self.ctx.settings, len(requests))
            except QueueFull as full:
                raise _queue_full(full) from None
        tenant = self.caller(req).tenant
        for index, request in requests:
            submission = submit(self.ctx.spool, self.ctx.settings, request, tenant,
                                self.ctx.kick, created=self.ctx.created, room_checked=True)
            answers[index] = {"token": submission.id}
        respond_json(resp, answers, 201 if requests else 422)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        query = _query(req)
        fields = _fields(query)
        base64_encoded = query.get("base64_encoded") == "true"
        tokens = [token.strip() for token in (req.get_header("tokens") or
                                              query.get("tokens") or "").split(",")
                  if token.strip()]
        if not tokens:
            raise _error(400, "there should be at least one submission in a batch", "tokens")
        if len(tokens) > MAX_BATCH:
            raise _error(400, "number of submissions in a batch should be less than or "
                         f"equal to {MAX_BATCH}", "tokens")
        owner = self.caller(req).owner
        found: list[Any] = []
        for token in tokens:
            try:
                submission = self.ctx.spool.get(token, owner=owner)
            except NotFound:
                found.append(None)  # unknown, or another tenant's: the same to the caller
                continue
            found.append(self._render(submission, fields, base64_encoded))
        respond_json(resp, {"submissions": found})


class Languages(_Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        respond_json(resp, [{"id": language_id, "name": entry.judge0.name}
                     for language_id, entry in sorted(languages(self.ctx.settings).items())
                     if entry.judge0])


class Language(_Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, language_id: str) -> None:
        entry = languages(self.ctx.settings).get(int(language_id)) \
            if language_id.isascii() and language_id.isdigit() and len(language_id) < 10 else None
        if entry is None or entry.judge0 is None:
            raise _error(404, "Not Found", "language_id")
        respond_json(resp, {"id": int(language_id), "name": entry.judge0.name, "is_archived": False,
                     "source_file": entry.main_file, "compile_cmd": entry.compile_sh,
                     "run_cmd": entry.run_sh})


class Statuses(_Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        respond_json(resp, [{"id": status_id, "description": description}
                     for status_id, description in STATUSES.items()])


class About(_Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        respond_json(resp, {"version": self.ctx.settings.compat.judge0.version,
                     "homepage": "https://github.com/nixjail/nixjail",
                     "source_code": "https://github.com/nixjail/nixjail",
                     "maintainer": "nixjail (Judge0-compatible front end)"})


class ConfigInfo(_Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        respond_json(resp, config_info(self.ctx.settings))


def mount(app: falcon.App, ctx: CompatContext) -> None:
    """Judge0's routes under `compat.judge0.prefix`."""
    prefix = ctx.settings.compat.judge0.prefix
    app.add_route(f"{prefix}/submissions", Submissions(ctx))
    app.add_route(f"{prefix}/submissions/batch", Batch(ctx))
    app.add_route(f"{prefix}/submissions/{{token}}", SubmissionItem(ctx))
    app.add_route(f"{prefix}/languages", Languages(ctx))
    app.add_route(f"{prefix}/languages/{{language_id}}", Language(ctx))
    app.add_route(f"{prefix}/statuses", Statuses(ctx))
    app.add_route(f"{prefix}/about", About(ctx))
    app.add_route(f"{prefix}/config_info", ConfigInfo(ctx))


__all__ = ["ALL_FIELDS", "build_request", "config_info", "error_body", "mount"]
