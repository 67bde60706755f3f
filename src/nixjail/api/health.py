"""`GET /healthz`: whether the API can write to the spool and, under
`nixjail serve`, whether each part of the host runs."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import falcon

from nixjail.api.errors import ApiError
from nixjail.api.media import respond
from nixjail.api.schemas import FieldError, Health, PartHealth
from nixjail.spool import Spool

# The parts of `nixjail serve` as they are now.
Parts = Callable[[], dict[str, PartHealth]]


class HealthResource:
    def __init__(self, spool: Spool, parts: Parts | None = None, *,
                 min_free_bytes: int = 0) -> None:
        """`min_free_bytes`: less room than this on the spool's disk is unhealthy
        (the API passes its body limit: a spool that cannot take one more
        submission is not well)."""
        self.spool = spool
        self.parts = parts
        self.min_free_bytes = min_free_bytes

    def _dirs(self) -> list[Path]:
        return self.spool.directories()

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        problems = []
        for directory in self._dirs():
            # Write for real: permissions alone miss a full or read-only disk.
            try:
                with tempfile.TemporaryFile(dir=directory) as probe:
                    probe.write(b"ok")
            except OSError as exc:
                problems.append(FieldError(field=str(directory), reason=exc.strerror or str(exc)))
        free = _free_bytes(self.spool.spool_dir)
        if free < self.min_free_bytes:
            problems.append(FieldError(
                field=str(self.spool.spool_dir),
                reason=f"{free} bytes free, less than one submission may take "
                       f"({self.min_free_bytes})"))
        if problems:
            raise ApiError(503, "unavailable", "the spool is not writable", problems)
        parts = self.parts() if self.parts is not None else {}
        down = [FieldError(field=f"parts.{name}",
                           reason=f"{part.state}: {part.last_exit or 'no reason known'}")
                for name, part in parts.items() if part.state != "running"]
        if down:
            raise ApiError(503, "unavailable", "a part of this host is not running", down)
        respond(resp, Health(status="ok", parts=parts))


def _free_bytes(directory: Path) -> int:
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize
