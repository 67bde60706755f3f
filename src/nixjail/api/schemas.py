"""The API's own bodies and query parameters, around the submission contract.

Being pydantic models, they validate what comes in and describe themselves in
the OpenAPI document, which is generated from them.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from nixjail.models import (
    CaseResult,
    Environment,
    NoNulText,
    StageResult,
    Submission,
    SubmissionStatus,
)
from nixjail.spool import Lease, Queue

MAX_LIMIT = 200
DEFAULT_LIMIT = 50


class FieldError(BaseModel):
    field: str = Field(min_length=1,
                       description='Where: a dotted path such as "limits.run.memory_mib"')
    reason: str


class ErrorBody(BaseModel):
    """Every 4xx and 5xx answer."""

    title: str = Field(description='The kind of problem, such as "invalid input"')
    description: str
    # At least one: every refusal names the field (or body, parameter, header) at fault.
    errors: list[FieldError] = Field(min_length=1)


class PartHealth(BaseModel):
    """One part of `nixjail serve` (the API, the runner, the cache builder, lease expiry)."""

    state: Literal["running", "restarting", "failing"] = Field(
        description="running; restarting after it stopped (see last_exit); failing: "
        "it runs, but its last pass failed (see last_exit)")
    pid: int | None = Field(default=None, description="Its process, when it has one of its own")
    restarts: int = Field(default=0, ge=0, description="Restarts since `nixjail serve` began")
    last_exit: str | None = Field(default=None,
                                  description="How it last stopped or failed, if it did")


class Health(BaseModel):
    status: str = Field(description='"ok"')
    parts: dict[str, PartHealth] = Field(
        default_factory=dict,
        description="Each part of `nixjail serve`; empty when the API runs on its own")


# -- query parameters ------------------------------------------------------------

# A JSON number, as the document says; Python alone would also read "inf",
# "1_0" or " 1" as one.
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


def _query_number(value: Any) -> Any:
    if isinstance(value, str):
        if not _JSON_NUMBER.fullmatch(value):
            raise ValueError("Input should be a valid number")
        # A number past a float's range reads as infinity: the longest wait, capped.
        return float(value)
    return value


# No NaN (it is not >= 0); infinity only stands for a number too large for a
# float, and every wait is capped by the server anyway.
WaitSeconds = Annotated[float, Field(
    ge=0,
    description="Hold the answer until the submission has ended or this many "
    "seconds have passed (capped by the server)"), BeforeValidator(_query_number)]


class WaitQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    wait: WaitSeconds = 0


class ItemQuery(WaitQuery):
    view: Literal["full", "summary"] = Field(
        default="full",
        description="summary leaves out the request (files, scripts, stdin) and outputs")


def _split_commas(value: Any) -> Any:
    return value.split(",") if isinstance(value, str) else value


class ListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Annotated[list[SubmissionStatus], BeforeValidator(_split_commas),
                      Field(min_length=1,
                            description="Only these statuses, comma-separated")] | None = None
    cursor: Annotated[str, Field(
        pattern=r"^[0-9A-Za-z]{1,64}$",
        description="The `next_cursor` of the previous page")] | None = None
    limit: int = Field(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT,
                       description="Submissions per page")


# -- worker bodies -----------------------------------------------------------------

Token = Annotated[str, Field(min_length=1, max_length=256, description="The lease's token")]


class LeaseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    queue: Queue
    holder: NoNulText = Field(min_length=1, max_length=256,
                              description="Who holds the lease, for operators and expiry")
    # A JSON number too large for a float (1e400) parses as infinity: the
    # longest wait, as the document allows any number >= 0.
    wait_s: float = Field(default=0, ge=0,
                          description="Wait this long for a job (capped by the server)")


class LeaseToken(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: Token


class StageReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: Token
    result: StageResult


class CaseReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: Token
    result: CaseResult


class LeaseCompletion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: Token
    error: NoNulText | None = Field(
        default=None, max_length=4096,
        description="Why the system failed; the submission then ends as error")
    environment: Environment | None = Field(
        default=None, description="Dependencies jobs: the environment that was built")


class LeaseRelease(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: Token
    reason: NoNulText = Field(min_length=1, max_length=4096,
                              description="Why the holder gives the job back")
    tried: bool = Field(
        default=True,
        description="Whether the try counts as an attempt; false when the host failed "
        "before the submission could (dockerd away), so that it does not use one up")


class LeaseGrant(BaseModel):
    """A job leased to a worker: the lease and its submission (whose `limits`
    the job runs under)."""

    lease: Lease
    submission: Submission


class LeaseRenewal(BaseModel):
    lease: Lease


__all__ = [
    "ErrorBody",
    "FieldError",
    "Health",
    "ItemQuery",
    "LeaseCompletion",
    "LeaseGrant",
    "LeaseRelease",
    "LeaseRenewal",
    "LeaseRequest",
    "LeaseToken",
    "ListQuery",
    "PartHealth",
    "StageReport",
    "WaitQuery",
]


# -- the environments catalog (GET /v1/environments) --------------------------


class EnvironmentPublication(BaseModel):
    """PUT /v1/environments/{name}: a remote cache builder's word that it built `name`."""

    model_config = ConfigDict(extra="forbid")

    environment: Environment
    shell_nix_sha256: str = Field(pattern=r"^[0-9a-f]{64}$",
                                  description="SHA-256 of the shell.nix it built")
