"""`GET /healthz`: whether the API can write to the spool."""

from __future__ import annotations

import tempfile
from pathlib import Path

import falcon

from nixjail.api.errors import ApiError
from nixjail.api.media import respond
from nixjail.api.schemas import FieldError, Health
from nixjail.spool import Queue, Spool


class HealthResource:
    def __init__(self, spool: Spool) -> None:
        self.spool = spool

    def _dirs(self) -> list[Path]:
        # Every directory the spool writes to (see the layout in nixjail.spool).
        dirs = [self.spool.spool_dir / "submissions", self.spool.run_dir / "leases"]
        for queue in Queue:
            dirs += [self.spool.spool_dir / "queues" / queue,
                     self.spool.spool_dir / "leased" / queue]
        return dirs

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        problems = []
        for directory in self._dirs():
            # Write for real: permissions alone miss a full or read-only disk.
            try:
                with tempfile.TemporaryFile(dir=directory) as probe:
                    probe.write(b"ok")
            except OSError as exc:
                problems.append(FieldError(field=str(directory), reason=exc.strerror or str(exc)))
        if problems:
            raise ApiError(503, "unavailable", "the spool is not writable", problems)
        respond(resp, Health(status="ok"))
