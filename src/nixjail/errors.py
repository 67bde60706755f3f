"""One base error for nixjail and the few kinds under it.

Each kind carries what its caller needs to answer well: the API maps a kind to
an HTTP status, the CLI to an exit code and a one-line message.
"""

from __future__ import annotations


class NixjailError(Exception):
    """Base of every error nixjail raises on purpose."""


class NotFound(NixjailError):
    """The named submission or lease does not exist."""


class Conflict(NixjailError):
    """The request is valid but the submission's state does not allow it."""


class LeaseLost(NixjailError):
    """The lease expired, was taken by another holder, or its submission ended."""


class InvalidInput(NixjailError):
    """Input that failed validation; `field` names where, the message says why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class ToolError(NixjailError):
    """An external tool (nix, docker, nsjail) failed in a way nixjail cannot mend."""


class ApiError(NixjailError):
    """The nixjail API answered with an error.

    Carries the HTTP `status`, the answer's `title` and `description`, and
    `errors`: the `{"field", "reason"}` pairs it named, so a client can show
    exactly what the server refused and why.
    """

    def __init__(self, status: int, title: str, description: str | None = None,
                 errors: list[dict[str, str]] | None = None) -> None:
        self.status = status
        self.title = title
        self.description = description
        self.errors = list(errors or [])
        self.retry_after_s: float | None = None  # what Retry-After said, if anything
        # Not super(): subclasses mix ApiError with the kinds above, and
        # InvalidInput's own __init__ wants (field, reason).
        NixjailError.__init__(self, self._message())

    def _message(self) -> str:
        head = f"{self.title} (HTTP {self.status})"
        if self.errors:
            named = "; ".join(
                f"{e.get('field')}: {e.get('reason')}" if e.get("field") else str(e.get("reason"))
                for e in self.errors)
            return f"{head}: {named}"
        if self.description:
            return f"{head}: {self.description}"
        return head
