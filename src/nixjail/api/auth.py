"""Bearer tokens with roles, read from the operator's tokens file.

The file has one `ROLE TOKEN` per line (ROLE: `submitter` or `worker`; a
token may appear under both roles; `#` starts a comment line). It is reread
whenever it changes on disk, so tokens are added and revoked without a
restart. Without a tokens file, auth is off: the all-in-one local default.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
from pathlib import Path
from typing import Any

import falcon

from nixjail.api.errors import ApiError

log = logging.getLogger(__name__)

ROLES = frozenset({"submitter", "worker"})


class TokenFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._entries: list[tuple[str, bytes]] = []

    def roles(self, token: str) -> set[str]:
        """The roles of `token`; empty when it is unknown or the file is unreadable."""
        entries = self._current()
        given = token.encode()
        # Compare against every entry, so the time taken says nothing about
        # which token came close.
        return {role for role, known in entries if hmac.compare_digest(known, given)}

    def _current(self) -> list[tuple[str, bytes]]:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            # Fail closed: a missing tokens file must not open the API.
            log.error("cannot read tokens file %s: %s", self.path, exc.strerror)
            return []
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self._lock:
            if stamp != self._stamp:
                self._entries = self._read()
                self._stamp = stamp
            return self._entries

    def _read(self) -> list[tuple[str, bytes]]:
        try:
            text = self.path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            log.error("cannot read tokens file %s: %s", self.path, exc)
            return []
        entries = []
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            words = line.split()
            if len(words) != 2 or words[0] not in ROLES:
                log.warning("%s:%d: expected 'ROLE TOKEN' with ROLE one of %s; line ignored",
                            self.path, number, ", ".join(sorted(ROLES)))
                continue
            entries.append((words[0], words[1].encode()))
        return entries


class AuthMiddleware:
    """Checks the bearer token against the `role` a resource declares.

    Resources without a `role` (health, metrics, the OpenAPI document) are open.
    """

    def __init__(self, tokens: TokenFile | None) -> None:
        self.tokens = tokens

    def process_resource(self, req: falcon.Request, resp: falcon.Response,
                         resource: Any, params: dict[str, Any]) -> None:
        role = getattr(resource, "role", None)
        if self.tokens is None or role is None:
            return
        scheme, _, token = (req.auth or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "unauthorized", "send 'Authorization: Bearer TOKEN'",
                           headers={"WWW-Authenticate": "Bearer"})
        roles = self.tokens.roles(token)
        if not roles:
            raise ApiError(401, "unauthorized", "the token is not known",
                           headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        if role not in roles:
            raise ApiError(403, "forbidden", f"this needs a {role} token")
