"""Compatibility front ends: Judge0's, Piston's and codapi's APIs over the
environment catalog, each under its own prefix (docs/compat.md).

Each is a thin translation onto nixjail's own submissions (the same spool,
limits, queue bound and tenancy); `nixjail.compat.common` has what they share.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from typing import Any

import falcon

from nixjail.api.errors import error_body, serialize_error
from nixjail.api.schemas import FieldError
from nixjail.api.submissions import WaitSlots
from nixjail.compat.common import CompatContext
from nixjail.settings import Settings
from nixjail.spool import Spool

# The front ends, by their settings' name, and the module of each.
FRONT_ENDS = {"judge0": "nixjail.compat.judge0", "piston": "nixjail.compat.piston",
              "codapi": "nixjail.compat.codapi"}

ErrorShape = Callable[[int, str, list[FieldError]], Any]


def mount(app: falcon.App, spool: Spool, settings: Settings, *,
          kick: Callable[[], None], waits: WaitSlots,
          created: Callable[[], None] | None = None) -> None:
    """Add the routes of every enabled front end under its prefix, and answer
    every error under a prefix in that front end's own shape."""
    ctx = CompatContext(spool=spool, settings=settings, kick=kick, waits=waits,
                        created=created)
    shapes: dict[str, ErrorShape] = {}
    for name, module_name in FRONT_ENDS.items():
        front_end = getattr(settings.compat, name)
        if not front_end.enabled:
            continue
        module = importlib.import_module(module_name)
        module.mount(app, ctx)
        shapes[front_end.prefix] = module.error_body
    if shapes:
        app.set_error_serializer(_shaped_errors(shapes))


def _shaped_errors(shapes: dict[str, ErrorShape]) -> Callable[..., None]:
    def serialize(req: falcon.Request, resp: falcon.Response,
                  exc: falcon.HTTPError) -> None:
        for prefix, shape in shapes.items():
            if req.path == prefix or req.path.startswith(prefix + "/"):
                body = error_body(req, exc)
                resp.data = json.dumps(shape(exc.status_code, body.description,
                                             body.errors)).encode()
                resp.content_type = falcon.MEDIA_JSON
                return
        serialize_error(req, resp, exc)

    return serialize
