"""Bearer tokens with roles and tenants, read from the operator's tokens file.

The file has one `ROLE TOKEN [TENANT]` per line (ROLE: `submitter`, `admin`
or `worker`; `#` starts a comment line). A token may appear under several
roles. It is reread whenever it changes on disk, so tokens are added and
revoked without a restart.

A submitter token owns the submissions it made: it lists, reads, waits on
and cancels those only, and another's answers 404 as an unknown id does. The
owner recorded in a submission is the token's tenant, never the token: the
TENANT the file names for it (several tokens may share one, and a token
rotated under the same name keeps its submissions), else `token-` and 16 hex
digits of a SHA-256 digest of the token. An `admin` token may do what a
submitter token may, on every submission.

Without a tokens file (the local default, on loopback) there is one tenant,
and every caller sees every submission; the lease endpoints are refused:
anything on the host could otherwise take a job and report a result of its
choosing for it. The services of the API's own host work on the spool
directly; a remote worker or cache builder always needs a worker token.

Tokens are compared in constant time, as digests of one length, against
every entry; neither they nor their digests are logged or stored.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import falcon

from nixjail.api.errors import ApiError
from nixjail.api.schemas import FieldError

log = logging.getLogger(__name__)

# The roles a resource may declare, and the roles of a token that pass it.
GRANTS: dict[str, frozenset[str]] = {
    "submitter": frozenset({"submitter", "admin"}),
    "worker": frozenset({"worker"}),
}
ROLES = frozenset().union(*GRANTS.values())
# A tenant is a spool directory name too (SPOOL/owners/TENANT), so no dot first.
TENANT_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")


def needs(role: str) -> str:
    """The tokens a resource of `role` takes, in words."""
    return " or ".join(sorted(GRANTS[role], key=lambda r: r != role))


def _digest(token: bytes) -> bytes:
    return hashlib.sha256(b"nixjail token\0" + token).digest()


def derived_tenant(token: str) -> str:
    """The tenant of a token the file names none for."""
    return "token-" + hashlib.sha256(b"nixjail tenant\0" + token.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Caller:
    """Who sent a request: the tenant it submits as, and whether it sees every tenant's.

    `tenant` is None only without a tokens file, where there is one tenant."""

    tenant: str | None
    admin: bool

    @property
    def owner(self) -> str | None:
        """The owner its reads are limited to; None: every submission."""
        return None if self.admin else self.tenant


# What every request is without a tokens file.
LOCAL_CALLER = Caller(tenant=None, admin=True)
# A caller without a token, where a compatibility front end takes them
# (nixjail.compat.anonymous); no token's tenant may take its name.
ANONYMOUS_TENANT = "anonymous"
ANONYMOUS_CALLER = Caller(tenant=ANONYMOUS_TENANT, admin=False)


@dataclass(frozen=True)
class _Entry:
    role: str
    digest: bytes
    tenant: str


class TokenFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._entries: list[_Entry] = []

    def lookup(self, token: str) -> tuple[set[str], str | None]:
        """The roles and the tenant of `token`; no roles when it is unknown or
        the file is unreadable."""
        given = _digest(token.encode())
        # Compare against every entry, so the time taken says nothing about
        # which token came close, or where in the file it is.
        matches = [entry for entry in self._current()
                   if hmac.compare_digest(entry.digest, given)]
        return {entry.role for entry in matches}, (matches[0].tenant if matches else None)

    def _current(self) -> list[_Entry]:
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

    def _read(self) -> list[_Entry]:
        try:
            text = self.path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            log.error("cannot read tokens file %s: %s", self.path, exc)
            return []
        lines: list[tuple[str, bytes, str]] = []
        tenants: dict[bytes, tuple[str, int]] = {}  # a token's named tenant, and where
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            # Never log the line: it holds a token.
            words = line.split()
            if len(words) not in (2, 3) or words[0] not in ROLES:
                log.warning("%s:%d: expected 'ROLE TOKEN [TENANT]' with ROLE one of %s; "
                            "line ignored", self.path, number, ", ".join(sorted(ROLES)))
                continue
            digest = _digest(words[1].encode())
            if len(words) == 3:
                if not TENANT_PATTERN.fullmatch(words[2]):
                    log.warning("%s:%d: a tenant is 1 to 64 letters, digits or ._@+-, "
                                "the first a letter or digit; line ignored",
                                self.path, number)
                    continue
                if words[2] == ANONYMOUS_TENANT:
                    # Its submissions would be every anonymous caller's to read.
                    log.warning("%s:%d: the tenant %s is the one of callers without a "
                                "token; line ignored", self.path, number, ANONYMOUS_TENANT)
                    continue
                first, where = tenants.setdefault(digest, (words[2], number))
                if first != words[2]:
                    log.warning("%s:%d: this token has tenant %s (line %d); line ignored",
                                self.path, number, first, where)
                    continue
            lines.append((words[0], digest, derived_tenant(words[1])))
        # One tenant per token, whichever of its lines names it.
        return [_Entry(role, digest, tenants.get(digest, (derived, 0))[0])
                for role, digest, derived in lines]


class AuthMiddleware:
    """Checks the bearer token against the `role` a resource declares, and
    tells the resource who calls (`req.context.caller`).

    Resources without a `role` (health, metrics, the OpenAPI document) are open.
    A resource may also declare `x_auth_token = True` (the token may come as
    `X-Auth-Token: TOKEN`, as Judge0's clients send it) and `anonymous`, a
    gate (`nixjail.compat.anonymous.AnonymousGate`) that admits callers
    without a token as the anonymous tenant.
    """

    def __init__(self, tokens: TokenFile | None) -> None:
        self.tokens = tokens

    def process_resource(self, req: falcon.Request, resp: falcon.Response,
                         resource: Any, params: dict[str, Any]) -> None:
        role = getattr(resource, "role", None)
        if role is None:
            return
        if self.tokens is None:
            if role == "worker":
                reason = ("the lease endpoints need a worker token, and this API has no "
                          "tokens file (api.tokens_file)")
                raise ApiError(403, "forbidden", reason,
                               [FieldError(field="Authorization", reason=reason)])
            req.context.caller = LOCAL_CALLER
            return
        x_auth_token = getattr(resource, "x_auth_token", False)
        token = self._token(req, x_auth_token)
        if token is None:
            gate = getattr(resource, "anonymous", None)
            if gate is not None and role == "submitter":
                req.context.caller = gate.admit(req)
                return
            how = "'Authorization: Bearer TOKEN'" + (
                " or 'X-Auth-Token: TOKEN'" if x_auth_token else "")
            raise ApiError(401, "unauthorized", f"send {how}",
                           headers={"WWW-Authenticate": "Bearer"})
        roles, tenant = self.tokens.lookup(token)
        if not roles:
            raise ApiError(401, "unauthorized", "the token is not known",
                           headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        if not roles & GRANTS[role]:
            raise ApiError(403, "forbidden", f"this needs a {needs(role)} token")
        req.context.caller = Caller(tenant=tenant, admin="admin" in roles)

    @staticmethod
    def _token(req: falcon.Request, x_auth_token: bool) -> str | None:
        """The token the request sends, None when it sends none; an Authorization
        header that is not a bearer token is refused, not passed over."""
        if req.auth is not None:
            scheme, _, token = req.auth.partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token:
                raise ApiError(401, "unauthorized", "send 'Authorization: Bearer TOKEN'",
                               headers={"WWW-Authenticate": "Bearer"})
            return token
        if x_auth_token:
            token = (req.get_header("X-Auth-Token") or "").strip()
            return token or None
        return None
