"""A small typed client of the nixjail HTTP API, for submitters and workers.

Every answer comes back as the contract's pydantic models; every refusal as a
`nixjail.errors` kind that is also an `ApiError` (HTTP status, title and the
server's field/reason pairs). Remote workers use the lease methods, whose
signatures follow `Spool`'s so a runner can take its work from either: both
satisfy `LeaseSource` (the spool through `SpoolLeaseSource`).
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from http.client import HTTPException
from typing import Any, NamedTuple, Protocol, TypeVar, runtime_checkable

from pydantic import TypeAdapter, ValidationError

from nixjail import __version__
from nixjail.errors import ApiError, Conflict, InvalidInput, LeaseLost, NixjailError, NotFound
from nixjail.models import (
    CaseResult,
    Environment,
    EnvironmentList,
    ResolvedStageLimits,
    StageName,
    StageResult,
    Submission,
    SubmissionPage,
    SubmissionRequest,
    SubmissionStatus,
)
from nixjail.settings import Settings
from nixjail.spool import Lease, Queue, Spool

DEFAULT_API_URL = "http://127.0.0.1:8460"
API_URL_ENV = "NIXJAIL_API"
TOKEN_ENV = "NIXJAIL_TOKEN"

# A long poll may legitimately take as long as its wait: the socket timeout
# must outlast it by a margin, or every long poll would end as a failure.
REQUEST_TIMEOUT_S = 30.0
# How long a submission is offered again while the server says it is busy.
BUSY_RETRY_S = 300.0

T = TypeVar("T")


class ApiUnavailable(NixjailError):
    """The API could not be reached, or answered with something that is not HTTP."""


class ApiNotFound(ApiError, NotFound):
    """404: the named submission or lease does not exist."""


class ApiConflict(ApiError, Conflict):
    """409: the submission's state does not allow the request."""


class ApiLeaseLost(ApiError, LeaseLost):
    """409 "lease lost": the lease expired, moved on, or its submission ended."""


class ApiInvalidInput(ApiError, InvalidInput):
    """400/413/422: the request failed the server's validation."""

    def __init__(self, status: int, title: str, description: str | None = None,
                 errors: list[dict[str, str]] | None = None) -> None:
        ApiError.__init__(self, status, title, description, errors)
        first = self.errors[0] if self.errors else {}
        self.field = first.get("field") or "request"
        self.reason = first.get("reason") or description or title


class LeasedJob(NamedTuple):
    """What leasing hands a worker: the lease, the submission and its resolved limits."""

    lease: Lease
    submission: Submission
    limits: ResolvedStageLimits


@runtime_checkable
class LeaseSource(Protocol):
    """Where a runner or cache builder takes its work from: the local spool or the API."""

    def lease(self, queue: Queue, holder: str, wait_s: float = 0) -> LeasedJob | None: ...

    def renew(self, lease: Lease) -> Lease: ...

    def report_stage(self, lease: Lease, stage: StageName,
                     result: StageResult) -> Submission: ...

    def report_case(self, lease: Lease, index: int, result: CaseResult) -> Submission: ...

    def complete(self, lease: Lease, error: str | None = None,
                 environment: Environment | None = None) -> Submission: ...

    def release(self, lease: Lease, reason: str, tried: bool = True) -> Submission: ...

    def publish_environment(self, name: str, environment: Environment, *,
                            shell_nix_sha256: str) -> None:
        """Tell the service that catalog environment `name` is built, from
        the shell.nix of that SHA-256."""
        ...


class SpoolLeaseSource:
    """The local spool as a `LeaseSource`: leasing also reads the submission and
    resolves its limits, as the API does for remote workers; `kick` wakes this
    host's runner when a job goes back to a queue, as the API's lease
    endpoints do."""

    def __init__(self, spool: Spool, settings: Settings,
                 kick: Callable[[], None] | None = None) -> None:
        self.spool = spool
        self.settings = settings
        self.kick = kick

    def _requeued(self, submission: Submission) -> Submission:
        if self.kick is not None and submission.status is SubmissionStatus.queued:
            self.kick()  # its next job (a run job, mostly) waits for a worker
        return submission

    def lease(self, queue: Queue, holder: str, wait_s: float = 0) -> LeasedJob | None:
        lease = self.spool.lease(queue, holder, wait_s=wait_s)
        if lease is None:
            return None
        submission = self.spool.get(lease.submission_id)
        return LeasedJob(lease, submission, submission.limits)

    def renew(self, lease: Lease) -> Lease:
        return self.spool.renew(lease)

    def report_stage(self, lease: Lease, stage: StageName, result: StageResult) -> Submission:
        return self.spool.report_stage(lease, stage, result)

    def report_case(self, lease: Lease, index: int, result: CaseResult) -> Submission:
        return self.spool.report_case(lease, index, result)

    def complete(self, lease: Lease, error: str | None = None,
                 environment: Environment | None = None) -> Submission:
        return self._requeued(
            self.spool.complete(lease, error=error, environment=environment))

    def release(self, lease: Lease, reason: str, tried: bool = True) -> Submission:
        return self._requeued(self.spool.release(lease, reason, tried=tried))

    def publish_environment(self, name: str, environment: Environment, *,
                            shell_nix_sha256: str) -> None:
        self.spool.publish_environment(name, environment, shell_nix_sha256=shell_nix_sha256)


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: not sent by nixjail


def _error_from(status: int, reason: str, body: bytes) -> ApiError:
    """The error kind an error answer stands for, with the server's own words."""
    title, description, errors = reason or "error", None, []
    try:
        data = json.loads(body) if body else {}
    except ValueError:
        data = None
    if isinstance(data, dict):
        title = str(data.get("title") or title)
        description = data.get("description")
        errors = [
            {"field": str(e.get("field") or ""), "reason": str(e.get("reason") or "")}
            for e in data.get("errors") or [] if isinstance(e, dict)
        ]
    elif body:
        description = body.decode("utf-8", "replace").strip()[:500]
    kind: type[ApiError] = ApiError
    if status == 404:
        kind = ApiNotFound
    elif status == 409:
        kind = ApiLeaseLost if title.lower() == "lease lost" else ApiConflict
    elif status in (400, 413, 422):
        kind = ApiInvalidInput
    return kind(status, title, description, errors)


class Client:
    """The nixjail API at `base_url`, with an optional bearer `token`."""

    def __init__(self, base_url: str = DEFAULT_API_URL, token: str | None = None, *,
                 timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s

    @classmethod
    def from_env(cls) -> Client:
        """The API named by `$NIXJAIL_API` with the token in `$NIXJAIL_TOKEN`."""
        return cls(os.environ.get(API_URL_ENV) or DEFAULT_API_URL,
                   os.environ.get(TOKEN_ENV) or None)

    # -- transport ----------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, *,
                query: dict[str, Any] | None = None,
                wait_s: float = 0) -> tuple[int, Any]:
        """Send one request; return the status and the decoded JSON answer (None if empty)."""
        url = self.base_url + path
        query = {k: v for k, v in (query or {}).items() if v is not None}
        if query:
            url += "?" + urllib.parse.urlencode(query)
        headers = {"Accept": "application/json", "User-Agent": f"nixjail/{__version__}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s + wait_s) as answer:
                status, payload = answer.status, answer.read()
        except urllib.error.HTTPError as exc:
            with exc:
                error = _error_from(exc.code, exc.reason, exc.read())
                error.retry_after_s = _seconds(exc.headers.get("Retry-After"))
                raise error from None
        except urllib.error.URLError as exc:
            raise ApiUnavailable(f"cannot reach the nixjail API at {self.base_url}: "
                                 f"{exc.reason}") from None
        except (OSError, HTTPException) as exc:
            # a read timeout is an OSError; a dropped connection is either kind
            what = "timed out" if isinstance(exc, TimeoutError) else str(exc) or repr(exc)
            raise ApiUnavailable(f"the nixjail API at {self.base_url} failed to answer "
                                 f"{method} {path}: {what}") from None
        if not payload:
            return status, None
        try:
            return status, json.loads(payload)
        except ValueError:
            raise ApiUnavailable(f"the nixjail API at {self.base_url} answered {method} "
                                 f"{path} with something that is not JSON") from None

    def _parse(self, model: type[T] | TypeAdapter[T], data: Any, what: str) -> T:
        adapter = model if isinstance(model, TypeAdapter) else TypeAdapter(model)
        try:
            return adapter.validate_python(data)
        except ValidationError as exc:
            raise ApiUnavailable(f"the nixjail API at {self.base_url} answered with a "
                                 f"malformed {what}: {exc.errors()[0]['msg']}") from None

    # -- submitters -----------------------------------------------------------

    def submit(self, request: SubmissionRequest, *, wait_s: float | None = None,
               busy_retry_s: float = BUSY_RETRY_S) -> Submission:
        """Queue a submission; with `wait_s`, hold the answer until it ends or time is up.

        While the server is busy (429: its queues are full; 507: its disk is)
        it is asked again after the time it names, for up to `busy_retry_s`.
        """
        body = request.model_dump(mode="json", exclude_none=True)
        give_up_at = time.monotonic() + busy_retry_s
        while True:
            try:
                _, data = self.request("POST", "/v1/submissions", body,
                                       query={"wait": wait_s}, wait_s=wait_s or 0)
                return self._parse(Submission, data, "submission")
            except ApiError as exc:
                pause = exc.retry_after_s if exc.retry_after_s is not None else 1.0
                if exc.status not in (429, 507) or time.monotonic() + pause > give_up_at:
                    raise
                time.sleep(pause)

    def get(self, submission_id: str, *, wait_s: float | None = None) -> Submission:
        """The submission; with `wait_s`, once it has ended or when time is up."""
        _, data = self.request("GET", f"/v1/submissions/{_quote(submission_id)}",
                               query={"wait": wait_s}, wait_s=wait_s or 0)
        return self._parse(Submission, data, "submission")

    def list(self, *, statuses: set[SubmissionStatus] | None = None,
             cursor: str | None = None, limit: int | None = None) -> SubmissionPage:
        """One page of submissions, newest first; pass `next_cursor` on for the next."""
        query = {"status": ",".join(sorted(statuses)) if statuses else None,
                 "cursor": cursor, "limit": limit}
        _, data = self.request("GET", "/v1/submissions", query=query)
        return self._parse(SubmissionPage, data, "page")

    def environments(self) -> EnvironmentList:
        """The operator's catalog of named environments, and whether each is built."""
        _, data = self.request("GET", "/v1/environments")
        return self._parse(EnvironmentList, data, "environment list")

    def cancel(self, submission_id: str) -> Submission:
        """End the submission as cancelled; ApiConflict if it has already ended."""
        _, data = self.request("DELETE", f"/v1/submissions/{_quote(submission_id)}")
        return self._parse(Submission, data, "submission")

    def wait(self, submission_id: str, timeout_s: float, *,
             poll_s: float = 60) -> Submission:
        """Long-poll until the submission ends or `timeout_s` passes; the last state seen."""
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            submission = self.get(submission_id, wait_s=max(0.0, min(poll_s, remaining)))
            if submission.status.ended or deadline - time.monotonic() <= 0:
                return submission

    # -- workers --------------------------------------------------------------

    def lease(self, queue: Queue, holder: str, wait_s: float = 0) -> LeasedJob | None:
        """Take the oldest job of `queue`, waiting up to `wait_s` for one; None if none came."""
        status, data = self.request("POST", "/v1/leases",
                                    {"queue": str(queue), "holder": holder, "wait_s": wait_s},
                                    wait_s=wait_s)
        if status == 204 or data is None:
            return None
        submission = self._parse(Submission, data.get("submission"), "submission")
        return LeasedJob(self._parse(Lease, data.get("lease"), "lease"), submission,
                         submission.limits)

    def renew(self, lease: Lease) -> Lease:
        """Extend the lease; ApiLeaseLost (a LeaseLost) when it is gone."""
        _, data = self.request("POST", f"{_lease_path(lease)}/renew", {"token": lease.token})
        return self._parse(Lease, (data or {}).get("lease"), "lease")

    def report_stage(self, lease: Lease, stage: StageName, result: StageResult) -> Submission:
        """Record one stage's result as soon as it is known."""
        _, data = self.request("PUT", f"{_lease_path(lease)}/stages/{stage}",
                               {"token": lease.token, "result": result.model_dump(mode="json")})
        return self._parse(Submission, data, "submission")

    def report_case(self, lease: Lease, index: int, result: CaseResult) -> Submission:
        """Record one test case's result as soon as it is known."""
        _, data = self.request("PUT", f"{_lease_path(lease)}/cases/{index}",
                               {"token": lease.token, "result": result.model_dump(mode="json")})
        return self._parse(Submission, data, "submission")

    def complete(self, lease: Lease, error: str | None = None,
                 environment: Environment | None = None) -> Submission:
        """End the leased job; `error` ends the submission as error with that reason,
        `environment` is what a dependencies job built."""
        _, data = self.request("POST", f"{_lease_path(lease)}/complete",
                               {"token": lease.token, "error": error,
                                "environment": environment.model_dump(mode="json")
                                if environment else None})
        return self._parse(Submission, data, "submission")

    def release(self, lease: Lease, reason: str, tried: bool = True) -> Submission:
        """Give the job back to its queue; it counts as an attempt unless not `tried`."""
        _, data = self.request("POST", f"{_lease_path(lease)}/release",
                               {"token": lease.token, "reason": reason, "tried": tried})
        return self._parse(Submission, data, "submission")

    def publish_environment(self, name: str, environment: Environment, *,
                            shell_nix_sha256: str) -> None:
        """A cache builder's word that catalog environment `name` is built (worker token)."""
        self.request("PUT", f"/v1/environments/{_quote(name)}",
                     {"environment": environment.model_dump(mode="json"),
                      "shell_nix_sha256": shell_nix_sha256})


def _quote(part: str) -> str:
    return urllib.parse.quote(part, safe="")


def _lease_path(lease: Lease) -> str:
    return f"/v1/leases/{_quote(lease.submission_id)}"
