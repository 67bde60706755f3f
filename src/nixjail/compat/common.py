"""What every compatibility front end does the same way.

A front end turns its client's request into a nixjail `SubmissionRequest`
naming a catalog environment (`request_for_source`), admits it as `/v1` does
(`submit`: the same queue bound, the same spool and tenancy), waits for it
(`wait_until_ended`, or `run_to_end` for a client that gets one answer per
run) and answers in its client's shape. Nothing here knows a
client; each front end module (judge0, piston, codapi) has

- `mount(app, ctx: CompatContext) -> None`: adds its routes under its prefix;
- `error_body(status, description, errors) -> JSON`: how its client expects
  an error, used for every error under its prefix (falcon's own 404 and 405,
  the auth middleware's 401, an unexpected 500: never nixjail's shape there).
"""

from __future__ import annotations

import base64
import json
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import falcon
from pydantic import ValidationError

from nixjail.api.admission import QueueFull, admit, check_room
from nixjail.api.auth import Caller
from nixjail.api.errors import ApiError, validation_error
from nixjail.api.schemas import FieldError
from nixjail.api.submissions import WaitSlots
from nixjail.compat.anonymous import AnonymousGate
from nixjail.errors import Conflict
from nixjail.models import FileEncoding, StageResult, Submission, SubmissionRequest
from nixjail.settings import CatalogEnvironment, CodapiCommand, Settings
from nixjail.spool import Spool

__all__ = ["CompatContext", "CompatResource", "NoWaitSlot", "QueueFull", "Ran", "check_room",
           "data", "rename_fields", "request_for_source", "respond_json", "run_to_end",
           "stage_bytes", "submit", "wait_until_ended"]

FrontEndName = Literal["judge0", "piston", "codapi"]


@dataclass
class CompatContext:
    """Everything a front end's resources work with, built once by `mount`."""

    spool: Spool
    settings: Settings
    kick: Callable[[], None]
    waits: WaitSlots
    created: Callable[[], None] | None = None
    _gates: dict[str, AnonymousGate | None] = field(default_factory=dict)

    def gate(self, front_end: FrontEndName) -> AnonymousGate | None:
        """The anonymous gate of `front_end` (one per front end, so all its
        resources share one count), None when it takes no anonymous callers."""
        if front_end not in self._gates:
            self._gates[front_end] = AnonymousGate(
                front_end, self.settings.compat.anonymous_requests_per_minute) \
                if getattr(self.settings.compat, front_end).anonymous else None
        return self._gates[front_end]


class CompatResource:
    """Base of a front end's resources: submitter callers (a token as
    `Authorization: Bearer` or `X-Auth-Token`), anonymous ones when allowed."""

    role = "submitter"
    x_auth_token = True

    def __init__(self, ctx: CompatContext, front_end: FrontEndName) -> None:
        self.ctx = ctx
        self.anonymous = ctx.gate(front_end)

    @staticmethod
    def caller(req: falcon.Request) -> Caller:
        # Set by AuthMiddleware for every resource with a role.
        return req.context.caller


# -- building the request --------------------------------------------------------

def data(content: bytes) -> str | dict[str, str]:
    """A file, stdin or expected output as the contract carries it: text when
    it is UTF-8, else base64, so any bytes pass unchanged."""
    try:
        return content.decode()
    except UnicodeDecodeError:
        return {"content": base64.b64encode(content).decode(),
                "encoding": FileEncoding.base64.value}


def _exports(env: Mapping[str, str]) -> str:
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in env.items())


def request_for_source(settings: Settings, entry: CatalogEnvironment, source: bytes, *,
                       command: CodapiCommand | None = None,
                       extra_files: Mapping[str, bytes] | None = None,
                       stdin: bytes | None = None,
                       args: Sequence[str] | None = None,
                       limits: Mapping[str, Mapping[str, Any]] | None = None,
                       tests: Sequence[Mapping[str, Any]] | None = None,
                       checker: Mapping[str, Any] | None = None,
                       env: Mapping[str, str] | None = None,
                       stderr_to_stdout: bool = False,
                       note: str | None = None,
                       callback_url: str | None = None,
                       output_encoding: Literal["auto", "base64"] = "auto",
                       field_names: Mapping[str, str] | None = None) -> SubmissionRequest:
    """The nixjail submission of one source file in catalog environment `entry`.

    The source becomes the file `entry.main_file`; `extra_files` lie beside
    it. The scripts are `command`'s where it gives them, else the entry's;
    `env` is exported at the top of each (a compiler's options, say),
    `stderr_to_stdout` sends the run's stderr to its stdout, `note` is a
    comment line on top (what the front end wants to read back from the
    stored submission). `limits` is nixjail's {"run": {...}, "compile": {...}};
    `tests` are nixjail test cases whose `stdin` and `expected_output` may be
    bytes. Validated exactly as `/v1/submissions` validates a body
    (`Settings.validate_request`, strict), so every limit, maximum and
    callback prefix applies; a refusal is an ApiError (422) whose fields are
    renamed by `field_names` (nixjail's field, or a prefix of it, to the
    client's name; see `rename_fields`).
    """
    files: dict[str, Any] = {entry.main_file: data(source)}
    for name, content in (extra_files or {}).items():
        if name == entry.main_file:
            raise _refused(field_names, "files", f"{name!r} is the name the source file "
                           "takes; another file cannot have it")
        files[name] = data(content)
    compile_sh = command.compile_sh if command and command.compile_sh else entry.compile_sh
    run_sh = command.run_sh if command and command.run_sh else entry.run_sh
    head = (f"# {note}\n" if note else "") + _exports(env or {})
    body: dict[str, Any] = {
        "environment": entry.name,
        "files": files,
        "compile_sh": None if compile_sh is None else head + compile_sh,
        "run_sh": head + ("exec 2>&1\n" if stderr_to_stdout else "") + run_sh,
        "output_encoding": output_encoding,
    }
    if stdin is not None:
        body["stdin"] = data(stdin)
    if args is not None:
        body["args"] = list(args)
    if limits:
        body["limits"] = {stage: dict(values) for stage, values in limits.items()}
    if tests is not None:
        body["tests"] = [{key: data(value) if isinstance(value, bytes) else value
                          for key, value in case.items()} for case in tests]
    if checker is not None:
        body["checker"] = dict(checker)
    if callback_url is not None:
        body["callback_url"] = callback_url
    try:
        return settings.validate_request(json.dumps(body).encode(), strict=True)
    except ValidationError as exc:
        refusal = validation_error(exc, SubmissionRequest)
        errors = rename_fields(refusal.errors, field_names)
        raise ApiError(422, refusal.title or "invalid input",
                       "; ".join(f"{e.field}: {e.reason}" for e in errors), errors) from None


def _refused(field_names: Mapping[str, str] | None, field: str, reason: str) -> ApiError:
    errors = rename_fields([FieldError(field=field, reason=reason)], field_names)
    return ApiError(422, "invalid input", f"{errors[0].field}: {reason}", errors)


def rename_fields(errors: Sequence[FieldError],
                  field_names: Mapping[str, str] | None) -> list[FieldError]:
    """`errors` with each nixjail field named as the client knows it: the
    longest key of `field_names` that is the field or a prefix of it (before a
    "." or "[") gives the name; unknown fields stay as they are."""
    if not field_names:
        return list(errors)
    renamed = []
    for error in errors:
        field = error.field
        matches = [key for key in field_names if field == key or (
            field.startswith(key) and field[len(key)] in ".[")]
        if matches:
            field = field_names[max(matches, key=len)]
        renamed.append(FieldError(field=field, reason=error.reason))
    return renamed


# -- admitting and waiting ------------------------------------------------------

def submit(spool: Spool, settings: Settings, request: SubmissionRequest, owner: str | None,
           kick: Callable[[], None], *, created: Callable[[], None] | None = None,
           room_checked: bool = False) -> Submission:
    """Admit `request` as `owner`'s, as `/v1/submissions` does; QueueFull when
    the queues are full (each front end answers that in its own shape).
    A batch checks `check_room(spool, settings, n)` once, then passes
    `room_checked`."""
    return admit(spool, settings, request, owner, kick, created=created,
                 room_checked=room_checked)


def wait_until_ended(ctx: CompatContext, submission: Submission, timeout_s: float,
                     resp: falcon.Response) -> Submission:
    """The submission once it ended, or as it is after `timeout_s` (capped by
    `api.max_wait_s`); at once when `api.max_waiters` requests wait already."""
    if submission.status.ended:
        return submission
    with ctx.waits.wait_for(timeout_s, resp) as wait_s:
        return ctx.spool.wait(submission.id, wait_s) if wait_s else submission


class NoWaitSlot(Exception):
    """No request may wait now: every `api.max_waiters` slot is taken, or the
    server waits for none (`api.max_wait_s` is 0: `waits_for_none`)."""

    def __init__(self, waits_for_none: bool) -> None:
        super().__init__("no waiting slot")
        self.waits_for_none = waits_for_none


@dataclass(frozen=True)
class Ran:
    """A synchronous run's outcome: the submission (ended, unless
    `cancelled`), how long it was waited for at most, and how long it took."""

    submission: Submission
    cancelled: bool
    waited_s: float
    elapsed_ms: int


def run_to_end(ctx: CompatContext, request: SubmissionRequest, owner: str | None,
               timeout_s: float, resp: falcon.Response) -> Ran:
    """Submit `request` as `owner`'s and wait for its end, as the front ends
    whose clients get one answer per run (Piston, codapi) answer.

    A waiting slot is taken first, so nothing is submitted that nobody could
    wait for (NoWaitSlot); QueueFull as `submit`. A run that has not ended
    within `timeout_s` (capped by `api.max_wait_s`) is cancelled: its client
    never asks again."""
    with ctx.waits.wait_for(timeout_s, resp) as wait_s:
        if not wait_s:
            raise NoWaitSlot(ctx.settings.api.max_wait_s <= 0)
        started = time.monotonic()
        submission = submit(ctx.spool, ctx.settings, request, owner, ctx.kick,
                            created=ctx.created)
        submission = ctx.spool.wait(submission.id, wait_s)
        elapsed_ms = int((time.monotonic() - started) * 1000)
    if submission.status.ended:
        return Ran(submission, False, wait_s, elapsed_ms)
    try:
        ctx.spool.cancel(submission.id)
    except Conflict:
        return Ran(ctx.spool.get(submission.id), False, wait_s, elapsed_ms)  # ended just now
    return Ran(submission, True, wait_s, elapsed_ms)


def respond_json(resp: falcon.Response, body: Any, status: int = 200) -> None:
    """Answer `body` as JSON, in the client's own shape (not a nixjail model)."""
    resp.status = status
    resp.content_type = falcon.MEDIA_JSON
    resp.data = json.dumps(body).encode()


# -- reading results -----------------------------------------------------------

def stage_bytes(result: StageResult | None, stream: Literal["stdout", "stderr"]) -> bytes:
    """What a stage wrote to `stream`, as bytes whichever encoding it came in."""
    if result is None:
        return b""
    text = getattr(result, stream)
    if getattr(result, f"{stream}_encoding") is FileEncoding.base64:
        return base64.b64decode(text)
    return text.encode()
