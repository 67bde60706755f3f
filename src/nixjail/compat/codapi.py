"""The codapi front end: codapi's `POST /v1/exec` over the environment catalog.

A catalog environment with a `codapi` mapping is a codapi sandbox (its
`sandbox` and `version`), each of its `commands` a command of that sandbox.
A request is one nixjail submission of that environment, answered once it
ended, synchronously, as codapi answers: `{id, ok, duration, stdout,
stderr}`. Browsers call it from the pages of the operator's
`compat.codapi.allowed_origins` (CORS, answered here for this prefix only).
docs/compat.md says what is mapped how.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import falcon

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
from nixjail.models import (
    StageResult,
    StageStatus,
    Submission,
    SubmissionRequest,
    SubmissionStatus,
)
from nixjail.settings import CatalogEnvironment, CodapiCommand, Settings

FRONT_END: Final = "codapi"
# The widget gives up after 10 s: answer before it does, with time to spare
# for the answer to travel and the page to show it.
EXEC_WAIT_S = 8.0
# A request names no version, or this one: the sandbox's entry of that version.
LATEST = "latest"
DEFAULT_COMMAND = "run"
# What a refusal carries as its id: codapi's own, when it has none yet.
NO_ID = "-"
MAX_SHOWN_CHARS = 100
# Where the compile script finds compiler options (none come from codapi).
COMPILER_OPTIONS_ENV = "COMPILER_OPTIONS"
# nixjail's fields as a codapi client names them, for refusals; a file keeps
# nixjail's `files["NAME"]`, which is codapi's name for it too.
FIELD_NAMES = {"environment": "sandbox", "run_sh": "command", "compile_sh": "command"}

# CORS: what a page may send, and how long a browser may keep the answer to
# its preflight.
ALLOWED_METHODS = "POST"
ALLOWED_HEADERS = ("content-type", "accept")
PREFLIGHT_MAX_AGE_S = 3600
EXPOSED_HEADERS = "Retry-After"


def error_body(status: int, description: str, errors: list[FieldError]) -> Any:
    """codapi's shape for every answer, a refusal too: the reason in stderr."""
    return answer(NO_ID, ok=False, duration_ms=0, stdout="", stderr=description)


def answer(execution_id: str, *, ok: bool, duration_ms: int, stdout: str,
           stderr: str) -> dict[str, Any]:
    return {"id": execution_id, "ok": ok, "duration": duration_ms, "stdout": stdout,
            "stderr": stderr}


def _shown(value: str) -> str:
    """A client's value as a refusal repeats it: a megabyte-long sandbox name
    need not come back whole."""
    return value if len(value) <= MAX_SHOWN_CHARS else value[:MAX_SHOWN_CHARS] + "…"


def _refused(status: int, field: str, reason: str,
             headers: dict[str, str] | None = None) -> ApiError:
    return ApiError(status, FRONT_END, reason, [FieldError(field=field, reason=reason)],
                    headers=headers)


def sandboxes(settings: Settings) -> dict[tuple[str, str], CatalogEnvironment]:
    """Every (sandbox, version) the catalog offers, and its environment."""
    return {(entry.codapi.sandbox, entry.codapi.version): entry
            for entry in settings.environments if entry.codapi}


# -- reading a request --------------------------------------------------------------

def _text_field(body: dict[str, Any], name: str, default: str) -> str:
    value = body.get(name)
    if value is None or value == "":
        return default
    if not isinstance(value, str):
        raise _refused(400, name, f"{name}: must be a string")
    return value


@dataclass(frozen=True)
class Target:
    """What a request names: the catalog entry and one of its commands."""

    entry: CatalogEnvironment
    command: CodapiCommand
    command_name: str
    sandbox: str  # as it is shown: "bash:latest"


def resolve(settings: Settings, body: dict[str, Any]) -> Target:
    """The environment and command a request names; 404 for an unknown one,
    as codapi answers."""
    sandbox = body.get("sandbox")
    if sandbox is None or sandbox == "":
        raise _refused(400, "sandbox", "sandbox: is required")
    if not isinstance(sandbox, str):
        raise _refused(400, "sandbox", "sandbox: must be a string")
    version = _text_field(body, "version", LATEST)
    command_name = _text_field(body, "command", DEFAULT_COMMAND)
    offered = sandboxes(settings)
    entry = offered.get((sandbox, version))
    if entry is None:
        versions = sorted(v for s, v in offered if s == sandbox)
        if not versions:
            raise _refused(404, "sandbox", f"unknown sandbox: {_shown(sandbox)}")
        raise _refused(404, "version", f"unknown sandbox: {sandbox} has no version "
                       f"{_shown(version)} (it has {', '.join(versions)})")
    assert entry.codapi is not None
    command = entry.codapi.commands.get(command_name)
    if command is None:
        raise _refused(404, "command", f"unknown command: {_shown(command_name)} (sandbox "
                       f"{sandbox} has {', '.join(sorted(entry.codapi.commands))})")
    return Target(entry, command, command_name, f"{sandbox}:{version}")


def files_of(body: dict[str, Any], entry: CatalogEnvironment) -> tuple[bytes,
                                                                      dict[str, bytes]]:
    """The main source (the file "", or the one named as the entry's main
    file) and the other files of a request."""
    files = body.get("files")
    if not isinstance(files, dict):
        raise _refused(400, "files", "files: must be an object of file names and contents")
    named: dict[str, bytes] = {}
    for name, content in files.items():
        if not isinstance(content, str):
            raise _refused(400, "files", f"files: the content of {name!r} must be a string")
        _utf8(name, f"files: the name {name!r}")
        named[name] = _utf8(content, f"files: the content of {name!r}")
    if "" in named:
        source = named.pop("")
    elif entry.main_file in named:
        source = named.pop(entry.main_file)
    else:
        raise _refused(400, "files", f'files: the code is missing: give it as "" (or as '
                       f"{entry.main_file!r})")
    if not named and not source.strip():
        raise _refused(400, "files", "empty request: the code is blank")
    return source, named


def _utf8(text: str, what: str) -> bytes:
    # JSON may carry a lone surrogate (\ud800), which no file can hold.
    try:
        return text.encode()
    except UnicodeEncodeError:
        raise _refused(400, "files", f"{what} is not valid Unicode (a lone "
                       "surrogate)") from None


def build_request(settings: Settings, body: Any) -> tuple[SubmissionRequest, Target]:
    """The nixjail request of one codapi body, and what it names."""
    if not isinstance(body, dict):
        raise _refused(400, "body", "the body must be a JSON object")
    target = resolve(settings, body)
    entry, command = target.entry, target.command
    source, extra = files_of(body, entry)
    try:
        request = request_for_source(
            settings, entry, source, command=command, extra_files=extra,
            env={COMPILER_OPTIONS_ENV: ""} if (command.compile_sh or entry.compile_sh)
            else None,
            note=f"codapi {target.sandbox} {target.command_name}",
            field_names=FIELD_NAMES)
    except ApiError as refused:
        # codapi answers every invalid request 400.
        errors = getattr(refused, "errors", [])
        raise ApiError(400, FRONT_END, refused.description or "invalid request",
                       errors) from None
    return request, target


# -- answering ----------------------------------------------------------------------

def _text(result: StageResult | None, stream: Literal["stdout", "stderr"]) -> str:
    # As codapi's JSON does: bytes that are not UTF-8 become U+FFFD.
    return stage_bytes(result, stream).decode(errors="replace")


def _why_stopped(submission: Submission, run: StageResult) -> str:
    """A line for stderr when nixjail stopped the program, so the reader
    learns why its output ends there."""
    limits = submission.limits.run
    reasons = {
        StageStatus.time_limit: f"it went past its time limit ({limits.wall_time_s:g} s "
                                f"wall, {limits.cpu_time_s:g} s CPU)",
        StageStatus.memory_limit: f"it went past its memory limit ({limits.memory_mib} MiB)",
        StageStatus.output_limit: f"it went past its output limit ({limits.output_kib} KiB)",
        StageStatus.signaled: f"it was killed by signal {run.signal}",
        StageStatus.error: "nixjail could not run it",
    }
    reason = reasons.get(run.status)
    return f"\n[nixjail: the program was stopped: {reason}]\n" if reason else ""


def render(submission: Submission) -> dict[str, Any]:
    """An ended submission as codapi's execution."""
    stages = submission.stages
    duration = sum(stage.wall_time_ms for stage in (stages.compile, stages.run)
                   if stage is not None)
    compile_result = stages.compile
    if submission.status is SubmissionStatus.done and stages.run is not None:
        run = stages.run
        return answer(submission.id, ok=run.status is StageStatus.ok and run.exit_code == 0,
                      duration_ms=duration, stdout=_text(run, "stdout"),
                      stderr=_text(run, "stderr") + _why_stopped(submission, run))
    if compile_result is not None and compile_result.status not in (StageStatus.ok,
                                                                     StageStatus.skipped):
        # The compiler's whole output, as codapi shows a compile error.
        output = _text(compile_result, "stdout") + _text(compile_result, "stderr")
        return answer(submission.id, ok=False, duration_ms=duration, stdout="",
                      stderr=output + _why_stopped(submission, compile_result))
    if submission.status is SubmissionStatus.failed:
        reason = "the sandbox's environment did not build (the operator's logs say why)"
    elif submission.status is SubmissionStatus.cancelled:
        reason = "the run was cancelled"
    else:
        reason = f"nixjail could not run it: {submission.error or 'unknown error'}"
    return answer(submission.id, ok=False, duration_ms=duration, stdout="",
                  stderr=f"[nixjail: {reason}]\n")


# -- resources ----------------------------------------------------------------------

class Exec(CompatResource):
    def __init__(self, ctx: CompatContext) -> None:
        super().__init__(ctx, FRONT_END)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        settings = self.ctx.settings
        body = parse_json(read_body(req, settings.api.max_body_bytes))
        request, target = build_request(settings, body)
        try:
            ran = run_to_end(self.ctx, request, self.caller(req).tenant, EXEC_WAIT_S, resp)
        except NoWaitSlot as none:
            if none.waits_for_none:
                raise _refused(503, "api.max_wait_s", "this server waits for no run "
                               "(api.max_wait_s is 0), so it cannot answer codapi") from None
            raise _refused(429, "busy", "busy: try again later",
                           headers={"Retry-After": "1"}) from None
        except QueueFull as full:
            raise _refused(429, "queue", "busy: the queue is full, try again later",
                           headers={"Retry-After": str(full.retry_after_s)}) from None
        if ran.cancelled:
            # As codapi answers a run past its timeout: a failed execution.
            body = answer(ran.submission.id, ok=False, duration_ms=ran.elapsed_ms, stdout="",
                          stderr=f"code execution timeout: {target.sandbox} did not finish "
                          f"within {ran.waited_s:g} s, so nixjail cancelled it")
        else:
            body = render(ran.submission)
        respond_json(resp, body)


# -- CORS ---------------------------------------------------------------------------

def normal_origin(origin: str) -> str:
    """An origin as browsers send it: lower case, without its scheme's default
    port; what cannot be read as one is kept as it is (and matches nothing)."""
    try:
        parts = urlsplit(origin.lower())
        port = parts.port
    except ValueError:  # "http://[::1", "http://host:99999"
        return origin
    default = {"http": 80, "https": 443}.get(parts.scheme)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


def _preflight(req: falcon.Request) -> bool:
    return req.method == "OPTIONS" and req.get_header(
        "Access-Control-Request-Method") is not None


class Cors:
    """CORS for this prefix only, from the operator's exact origins.

    A preflight (OPTIONS with Access-Control-Request-Method) is answered here,
    before routing and authentication (a browser sends no credentials with
    it): 204 with the headers for an allowed origin asking for POST, else a
    refusal in codapi's shape without any. Every other answer under the prefix
    carries Access-Control-Allow-Origin for an allowed origin; a request from
    an origin not allowed is refused, so a page elsewhere cannot make its
    visitors' browsers run code here (the content type of a JSON body already
    forces a preflight; this holds even without one)."""

    def __init__(self, prefix: str, origins: list[str]) -> None:
        self.prefix = prefix
        self.origins = frozenset(normal_origin(origin) for origin in origins)

    def _ours(self, req: falcon.Request) -> bool:
        return req.path == self.prefix or req.path.startswith(self.prefix + "/")

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if not self._ours(req):
            return
        origin = req.get_header("Origin")
        preflight = _preflight(req)
        if origin is None:
            if preflight:
                raise _refused(400, "Origin", "a CORS preflight must name its Origin")
            return
        if normal_origin(origin) not in self.origins:
            listed = "none is" if not self.origins else "it is not"
            raise _refused(403, "Origin", f"the origin {_shown(origin)} may not call this server "
                           f"(compat.codapi.allowed_origins: {listed} listed)")
        if not preflight:
            return
        method = req.get_header("Access-Control-Request-Method") or ""
        if method.upper() != ALLOWED_METHODS:
            raise _refused(403, "Access-Control-Request-Method",
                           f"only {ALLOWED_METHODS} may be sent here, not {_shown(method)}")
        asked = {name.strip().lower() for name in
                 (req.get_header("Access-Control-Request-Headers") or "").split(",")
                 if name.strip()}
        refused = sorted(asked - set(ALLOWED_HEADERS))
        if refused:
            raise _refused(403, "Access-Control-Request-Headers",
                           "these headers may not be sent here: "
                           f"{_shown(', '.join(refused))} "
                           f"(allowed: {', '.join(ALLOWED_HEADERS)})")
        resp.status = 204
        req.context.codapi_preflight_answered = True
        resp.set_header("Access-Control-Allow-Methods", ALLOWED_METHODS)
        resp.set_header("Access-Control-Allow-Headers", ", ".join(ALLOWED_HEADERS))
        resp.set_header("Access-Control-Max-Age", str(PREFLIGHT_MAX_AGE_S))
        resp.complete = True

    def process_response(self, req: falcon.Request, resp: falcon.Response,
                         resource: object, req_succeeded: bool) -> None:
        if not self._ours(req):
            return
        # The answer depends on the Origin: a cache must keep one per origin.
        resp.append_header("Vary", "Origin")
        origin = req.get_header("Origin")
        refused_preflight = _preflight(req) and not getattr(
            req.context, "codapi_preflight_answered", False)
        if origin is not None and normal_origin(origin) in self.origins \
                and not refused_preflight:
            resp.set_header("Access-Control-Allow-Origin", origin)
            resp.set_header("Access-Control-Expose-Headers", EXPOSED_HEADERS)


def mount(app: falcon.App, ctx: CompatContext) -> None:
    """codapi's route under `compat.codapi.prefix` (the widget's url is
    PREFIX/v1), and CORS for that prefix."""
    codapi = ctx.settings.compat.codapi
    app.add_middleware(Cors(codapi.prefix, codapi.allowed_origins))
    app.add_route(f"{codapi.prefix}/v1/exec", Exec(ctx))


__all__ = ["Target", "build_request", "error_body", "mount", "render"]
