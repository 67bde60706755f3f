"""Every error the API answers, in one JSON shape.

`{"title", "description", "errors": [{"field", "reason"}]}`: the title says
what kind of problem, the description says it in a sentence, and `errors`
names each field at fault, so a client can point its user at the exact place.
"""

from __future__ import annotations

import errno
import json
import logging
import re
import types
import typing
from http import HTTPStatus
from typing import Any

import falcon
from pydantic import BaseModel, ValidationError

from nixjail.api.schemas import ErrorBody, FieldError
from nixjail.errors import Conflict, InvalidInput, LeaseLost, NotFound

log = logging.getLogger(__name__)


class ApiError(falcon.HTTPError):
    """An HTTP error that carries the fields at fault."""

    def __init__(self, status: int, title: str, description: str,
                 errors: list[FieldError] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(status, title=title, description=description, headers=headers)
        self.errors = errors or []


def invalid(field: str, reason: str, *, status: int = 400,
            title: str = "invalid input") -> ApiError:
    return ApiError(status, title, f"{field}: {reason}", [FieldError(field=field, reason=reason)])


def error_body(req: falcon.Request, exc: falcon.HTTPError) -> ErrorBody:
    """The title, sentence and fields at fault of any error, falcon's own too."""
    code = exc.status_code
    title = exc.title or ""
    if not title or title.startswith(str(code)):
        # falcon's own errors (unknown route, wrong method) title themselves
        # "404 Not Found"; speak like the rest of the API
        title = HTTPStatus(code).phrase.lower()
    description = exc.description or _default_description(req, code, title)
    errors = getattr(exc, "errors", None) or [
        FieldError(field=_FIELD_AT_FAULT.get(code, "request"), reason=description)]
    return ErrorBody(title=title, description=description, errors=errors)


def serialize_error(req: falcon.Request, resp: falcon.Response,
                    exc: falcon.HTTPError) -> None:
    """Always JSON, whatever the client accepts: one shape for every error."""
    resp.data = error_body(req, exc).model_dump_json().encode()
    resp.content_type = falcon.MEDIA_JSON


# Where the fault lies when a refusal names no field itself.
_FIELD_AT_FAULT = {
    400: "request", 401: "Authorization", 403: "Authorization", 404: "path",
    405: "method", 409: "status", 411: "Content-Length", 413: "body",
    415: "Content-Type", 429: "queue", 431: "headers", 503: "spool", 507: "spool",
}


def _default_description(req: falcon.Request, code: int, title: str) -> str:
    if code == 404:
        return f"nothing at {req.path}"
    if code == 405:
        return f"{req.method} is not allowed on {req.path}"
    return title


# -- nixjail errors to HTTP ---------------------------------------------------

def _not_found(req: falcon.Request, resp: falcon.Response, ex: NotFound,
               params: dict[str, Any]) -> None:
    field = "submission_id" if "submission_id" in params else "path"
    raise ApiError(404, "not found", str(ex), [FieldError(field=field, reason=str(ex))])


def _conflict(req: falcon.Request, resp: falcon.Response, ex: Conflict,
              params: dict[str, Any]) -> None:
    raise ApiError(409, "conflict", str(ex))


def _lease_lost(req: falcon.Request, resp: falcon.Response, ex: LeaseLost,
                params: dict[str, Any]) -> None:
    raise ApiError(409, "lease lost", str(ex), [FieldError(field="token", reason=str(ex))])


def _invalid_input(req: falcon.Request, resp: falcon.Response, ex: InvalidInput,
                   params: dict[str, Any]) -> None:
    raise invalid(ex.field, ex.reason)


def _os_error(req: falcon.Request, resp: falcon.Response, ex: OSError,
              params: dict[str, Any]) -> None:
    # A full or read-only spool is the operator's to mend, and passes: say
    # so plainly. Every write is atomic, so nothing half-written stays.
    if ex.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = "the spool's disk is full; try again later"
        raise ApiError(507, "insufficient storage", reason,
                       [FieldError(field="spool", reason=reason)],
                       headers={"Retry-After": "30"})
    if ex.errno == errno.EROFS:
        reason = "the spool is read-only; try again later"
        raise ApiError(503, "unavailable", reason, [FieldError(field="spool", reason=reason)],
                       headers={"Retry-After": "30"})
    _unexpected(req, resp, ex, params)


def _unexpected(req: falcon.Request, resp: falcon.Response, ex: Exception,
                params: dict[str, Any]) -> None:
    # The traceback stays in the server's log; the client learns only that
    # the server failed, never how.
    log.error("%s %s failed", req.method, req.path, exc_info=ex)
    raise ApiError(500, "internal error", "the server failed; its log says why")


def install(app: falcon.App) -> None:
    app.set_error_serializer(serialize_error)
    app.add_error_handler(Exception, _unexpected)
    app.add_error_handler(OSError, _os_error)
    app.add_error_handler(NotFound, _not_found)
    app.add_error_handler(Conflict, _conflict)
    app.add_error_handler(LeaseLost, _lease_lost)
    app.add_error_handler(InvalidInput, _invalid_input)


# -- pydantic errors to field errors --------------------------------------------

# A model validator names the field of each problem it finds as "FIELD:
# reason" (FIELD a dotted path such as limits.run.memory_mib or
# tests[2].limits.wall_time_s), problems joined by "; "; a nested model's
# FIELD is under the field that holds it (checker.check_sh).
_FIELD_PROBLEM = re.compile(r"^([a-z_]+(?:\.[a-z_]+|\[[0-9]+\])*): (.+)$")
_VALIDATOR_PREFIXES = ("Value error, ", "Assertion failed, ")


def validation_error(exc: ValidationError, model: type[BaseModel] | None,
                     *, what: str = "body") -> ApiError:
    """An ApiError naming every field pydantic refused, and why."""
    problems = exc.errors(include_url=False, include_context=False, include_input=False)
    if any(problem["type"] == "json_invalid" for problem in problems):
        reason = next(p["msg"] for p in problems if p["type"] == "json_invalid")
        return ApiError(400, "invalid JSON", f"the body is not valid JSON: {reason}",
                        [FieldError(field="body", reason=reason)])
    errors: list[FieldError] = []
    for problem in _one_per_union(problems, model):
        reason = problem["msg"]
        for prefix in _VALIDATOR_PREFIXES:
            reason = reason.removeprefix(prefix)
        field = field_name(model, problem["loc"])[0] or what
        if _FIELD_PROBLEM.match(reason):
            under = "" if field == what else f"{field}."
            for part in reason.split("; "):
                match = _FIELD_PROBLEM.match(part)
                if match:
                    errors.append(FieldError(field=under + match[1], reason=match[2]))
                else:
                    errors.append(FieldError(field=field, reason=part))
            continue
        errors.append(FieldError(field=field, reason=reason))
    status, title = (422, "invalid input") if what == "body" else (400, "invalid parameter")
    summary = "; ".join(f"{e.field}: {e.reason}" for e in errors[:5])
    if len(errors) > 5:
        summary += f"; and {len(errors) - 5} more"
    return ApiError(status, title, summary, errors)


def _one_per_union(problems: list[Any], model: type[BaseModel] | None) -> list[Any]:
    """One problem per field where pydantic reports one per member of a union.

    A value that is the wrong type for every member gets one problem listing
    what it may be; a value that matched a member's type keeps only that
    member's problems (a bad base64 content, not "should be a string").
    """
    kept: list[Any] = []
    by_union: dict[tuple[Any, ...], list[Any]] = {}
    for problem in problems:
        union_at = field_name(model, problem["loc"])[1]
        if union_at is None:
            kept.append(problem)
        else:
            by_union.setdefault(union_at, []).append(problem)
    for group in by_union.values():
        wrong_type = [p for p in group if p["type"].endswith("_type") and
                      len(p["loc"]) == len(group[0]["loc"])]
        others = [p for p in group if p not in wrong_type]
        if others:
            kept += others
        else:
            options = [p["msg"].removeprefix("Input should be ") for p in wrong_type]
            kept.append({**wrong_type[0], "msg": "Input should be " + " or ".join(options)})
    return kept


def field_name(model: type[BaseModel] | None,
               loc: tuple[int | str, ...]) -> tuple[str, tuple[int | str, ...] | None]:
    """A readable name for a pydantic error location.

    Model fields join with dots, dictionary keys are quoted in brackets
    (`files["../x"]`), list items are indexed; the member tags pydantic puts
    into the location of a union (`str`, `FileContent`) are left out, since
    the client wrote one field, not one per member.
    Also returns the location of the union the error came through, if any.
    """
    name = ""
    union_at = None
    annotation: Any = model
    for index, part in enumerate(loc):
        annotation = _unwrap(annotation)
        origin = typing.get_origin(annotation)
        if origin in (typing.Union, types.UnionType):
            union_at = loc[:index]
            members = typing.get_args(annotation)
            annotation = next((m for m in members if _tag(m) == part), None)
            continue
        if (isinstance(annotation, type) and issubclass(annotation, BaseModel)
                and part in annotation.model_fields):
            name = f"{name}.{part}" if name else str(part)
            annotation = annotation.model_fields[str(part)].annotation
        elif origin is dict:
            if part != "[key]":
                name += f"[{json.dumps(part, ensure_ascii=False)}]"
                annotation = typing.get_args(annotation)[1]
        elif isinstance(part, int):
            name += f"[{part}]"
            args = typing.get_args(annotation)
            annotation = args[0] if args else None
        else:
            name = f"{name}.{part}" if name else str(part)
            annotation = None
    return name, union_at


def _unwrap(annotation: Any) -> Any:
    """Strip Annotated and Optional, which pydantic does not show in locations."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
            continue
        if origin in (typing.Union, types.UnionType):
            members = [m for m in typing.get_args(annotation) if m is not type(None)]
            if len(members) == 1:
                annotation = members[0]
                continue
        return annotation


def _tag(annotation: Any) -> str | None:
    annotation = _unwrap(annotation)
    return getattr(annotation, "__name__", None)
