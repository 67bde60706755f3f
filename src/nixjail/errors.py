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
