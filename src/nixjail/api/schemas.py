"""The API's own bodies and query parameters, around the submission contract.

Being pydantic models, they validate what comes in and describe themselves in
the OpenAPI document, which is generated from them.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from nixjail.models import (
    Environment,
    NoNulText,
    ResolvedStageLimits,
    StageResult,
    Submission,
    SubmissionStatus,
)
from nixjail.spool import LeaseRecord, Queue

MAX_LIMIT = 200
DEFAULT_LIMIT = 50


class FieldError(BaseModel):
    field: str = Field(description='Where: a dotted path such as "limits.run.memory_mib"')
    reason: str


class ErrorBody(BaseModel):
    """Every 4xx and 5xx answer."""

    title: str = Field(description='The kind of problem, such as "invalid input"')
    description: str
    errors: list[FieldError] = Field(default_factory=list)


class Health(BaseModel):
    status: str = Field(description='"ok"')


# -- query parameters ------------------------------------------------------------

WaitSeconds = Annotated[float, Field(
    ge=0, allow_inf_nan=False,
    description="Hold the answer until the submission has ended or this many "
    "seconds have passed (capped by the server)")]


class WaitQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    wait: WaitSeconds = 0


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
    wait_s: float = Field(default=0, ge=0, allow_inf_nan=False,
                          description="Wait this long for a job (capped by the server)")


class LeaseToken(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: Token


class StageReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: Token
    result: StageResult


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


class LeaseGrant(BaseModel):
    """A job leased to a worker: the lease, its submission and its limits."""

    lease: LeaseRecord
    submission: Submission
    limits: ResolvedStageLimits = Field(description="The request's limits with server defaults")


class LeaseRenewal(BaseModel):
    lease: LeaseRecord


__all__ = [
    "ErrorBody", "FieldError", "Health", "LeaseCompletion", "LeaseGrant", "LeaseRelease",
    "LeaseRenewal", "LeaseRequest", "LeaseToken", "ListQuery", "StageReport", "WaitQuery",
]
