"""`/v1/leases`: how remote workers and cache builders take and report jobs."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import cast

import falcon

from nixjail.api.errors import invalid
from nixjail.api.media import parse_body, respond
from nixjail.api.schemas import (
    CaseReport,
    LeaseCompletion,
    LeaseGrant,
    LeaseRelease,
    LeaseRenewal,
    LeaseRequest,
    LeaseToken,
    StageReport,
)
from nixjail.api.submissions import WaitSlots
from nixjail.errors import LeaseLost
from nixjail.models import STAGES, StageName, Submission, SubmissionStatus
from nixjail.settings import Settings
from nixjail.spool import Lease, Spool


def _is_id(value: str) -> bool:
    return value.isascii() and value.isalnum()


class LeaseCollection:
    role = "worker"

    def __init__(self, spool: Spool, settings: Settings, waits: WaitSlots) -> None:
        self.spool = spool
        self.settings = settings
        self.waits = waits

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = parse_body(req, LeaseRequest, self.settings.api.max_body_bytes)
        with self.waits.wait_for(body.wait_s, resp) as wait_s:
            lease = self.spool.lease(body.queue, body.holder, wait_s=wait_s)
        if lease is None:
            resp.status = falcon.HTTP_204
            return
        submission = self.spool.get(lease.submission_id)
        respond(resp, LeaseGrant(lease=lease, submission=submission))


class LeaseItem:
    """One held lease; its token, in every body, proves the caller holds it."""

    role = "worker"

    def __init__(self, spool: Spool, settings: Settings, *,
                 kick: Callable[[], None]) -> None:
        self.spool = spool
        self.settings = settings
        self.kick = kick

    def _held(self, submission_id: str, token: str) -> Lease:
        # The spool checks the token again under its lock; this look-up only
        # finds the queue the lease is on.
        record = self.spool.lease_of(submission_id) if _is_id(submission_id) else None
        if record is None or not hmac.compare_digest(record.token.encode(), token.encode()):
            raise LeaseLost(f"no lease on {submission_id} with this token")
        return record

    def _requeued(self, submission: Submission) -> None:
        if submission.status is SubmissionStatus.queued:
            self.kick()  # its next job waits for a worker

    def on_post_renew(self, req: falcon.Request, resp: falcon.Response,
                      submission_id: str) -> None:
        body = parse_body(req, LeaseToken, self.settings.api.max_body_bytes)
        lease = self.spool.renew(self._held(submission_id, body.token))
        respond(resp, LeaseRenewal(lease=lease))

    def on_put_stage(self, req: falcon.Request, resp: falcon.Response,
                     submission_id: str, stage: str) -> None:
        if stage not in STAGES:
            raise invalid("stage", f"must be one of {', '.join(STAGES)}",
                          title="invalid parameter")
        body = parse_body(req, StageReport, self.settings.max_report_bytes,
                          too_large="the most a stage report takes: stdout and stderr of "
                          "the largest output_kib in limits_max, every byte at its worst "
                          "in JSON")
        lease = self._held(submission_id, body.token)
        respond(resp, self.spool.report_stage(lease, cast(StageName, stage), body.result))

    def on_put_case(self, req: falcon.Request, resp: falcon.Response,
                    submission_id: str, index: int) -> None:
        body = parse_body(req, CaseReport, self.settings.max_report_bytes,
                          too_large="the most a case report takes: stdout and stderr of "
                          "the largest output_kib in limits_max, every byte at its worst "
                          "in JSON, and the output files")
        lease = self._held(submission_id, body.token)
        respond(resp, self.spool.report_case(lease, index, body.result))

    def on_post_complete(self, req: falcon.Request, resp: falcon.Response,
                         submission_id: str) -> None:
        body = parse_body(req, LeaseCompletion, self.settings.api.max_body_bytes)
        submission = self.spool.complete(self._held(submission_id, body.token),
                                         error=body.error, environment=body.environment)
        self._requeued(submission)
        respond(resp, submission)

    def on_post_release(self, req: falcon.Request, resp: falcon.Response,
                        submission_id: str) -> None:
        body = parse_body(req, LeaseRelease, self.settings.api.max_body_bytes)
        submission = self.spool.release(self._held(submission_id, body.token), body.reason,
                                        tried=body.tried)
        self._requeued(submission)
        respond(resp, submission)
