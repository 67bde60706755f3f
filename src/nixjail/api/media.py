"""Reading what a request brings: a bounded JSON body, typed query parameters."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import falcon
from pydantic import BaseModel, ValidationError

from nixjail.api.errors import ApiError, invalid, validation_error
from nixjail.api.schemas import FieldError

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


def read_body(req: falcon.Request, max_bytes: int, too_large: str | None = None, *,
              media_types: tuple[str, ...] = (falcon.MEDIA_JSON,)) -> bytes:
    """The raw JSON body, refused (415, 413) before pydantic sees it; `too_large`
    says what the cap is, `media_types` what it may be sent as."""
    mimetype, _, params = (req.content_type or "").partition(";")
    if mimetype.strip().lower() not in media_types:
        shown = (mimetype.strip() or "absent")[:100]
        raise ApiError(415, "unsupported media type",
                       f"the body must be {' or '.join(media_types)}, not {shown}")
    charsets = [param.strip().lower().removeprefix("charset=").strip('"')
                for param in params.split(";") if param.strip().lower().startswith("charset=")]
    if any(charset not in ("utf-8", "utf8") for charset in charsets):
        raise ApiError(415, "unsupported media type", "JSON bodies are UTF-8")
    reason = f"the body is larger than {max_bytes} bytes" + (f", {too_large}" if too_large
                                                               else "")
    refusal = ApiError(413, "payload too large", reason,
                       [FieldError(field="body", reason=reason)])
    length = req.content_length
    if length is not None and length > max_bytes:
        raise refusal  # refuse without reading
    # Without a length (a chunked body the server did not buffer), read the
    # stream itself, one byte past the cap to tell "at the cap" from "above".
    stream = req.bounded_stream if length is not None else req.stream
    raw = stream.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise refusal
    return raw


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def parse_json(raw: bytes) -> Any:
    """A body parsed as JSON by the front ends that read it themselves;
    ApiError 400 naming `body` when it is none (NaN and Infinity are not
    JSON, and nesting deeper than Python's parser goes is refused too)."""
    try:
        return json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        reason = str(exc) if isinstance(exc, ValueError) else "it is nested too deeply"
        message = f"the body is not valid JSON: {reason}"
        raise ApiError(400, "invalid body", message,
                       [FieldError(field="body", reason=message)]) from None


def parse_body(req: falcon.Request, model: type[M], max_bytes: int,
               parse: Callable[[bytes], M] | None = None, *,
               too_large: str | None = None) -> M:
    """The body validated as `model` (or by `parse`, which validates as `model`).

    Strictly: JSON of the wrong type is refused, not coerced (`"cache": 0`).
    """
    raw = read_body(req, max_bytes, too_large)
    try:
        return parse(raw) if parse is not None else model.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        raise validation_error(exc, model) from None


def parse_query(req: falcon.Request, model: type[M]) -> M:
    """The query string validated as `model`: unknown or repeated names are refused."""
    # Blank values too (falcon drops them from req.params): `?bogus=` is an
    # unknown parameter and `?wait=` no number, as the document says.
    params = falcon.uri.parse_query_string(req.query_string, keep_blank=True, csv=False)
    for name, value in params.items():
        if isinstance(value, list):
            # "?=a&=b" has a name too, if an empty one: say where the fault is
            raise invalid(name or "query", "given more than once", title="invalid parameter")
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        raise validation_error(exc, model, what="query") from None


def respond(resp: falcon.Response, body: BaseModel, status: int = 200) -> None:
    """Serialise with pydantic, so every answer matches its published schema."""
    resp.status = status
    resp.content_type = falcon.MEDIA_JSON
    resp.data = body.model_dump_json().encode()
