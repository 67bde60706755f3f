"""Where a runner leases from: the local spool, or the API of another host."""

from __future__ import annotations

from typing import Protocol

from nixjail.models import ResolvedStageLimits, StageName, StageResult, Submission
from nixjail.settings import Settings
from nixjail.spool import Lease, Queue, Spool

Leased = tuple[Lease, Submission, ResolvedStageLimits]


class LeaseSource(Protocol):
    def lease(self, queue: Queue, holder: str, wait_s: float = 0) -> Leased | None: ...
    def renew(self, lease: Lease) -> Lease: ...
    def report_stage(self, lease: Lease, stage: StageName, result: StageResult) -> object: ...
    def complete(self, lease: Lease, error: str | None = None) -> object: ...
    def release(self, lease: Lease, reason: str) -> object: ...


class SpoolSource:
    """Leases straight from a spool on this host."""

    def __init__(self, spool: Spool, settings: Settings) -> None:
        self.spool = spool
        self.settings = settings

    def lease(self, queue: Queue, holder: str, wait_s: float = 0) -> Leased | None:
        lease = self.spool.lease(queue, holder, wait_s=wait_s)
        if lease is None:
            return None
        submission = self.spool.get(lease.submission_id)
        return lease, submission, self.settings.resolve_limits(submission.request)

    def renew(self, lease: Lease) -> Lease:
        return self.spool.renew(lease)

    def report_stage(self, lease: Lease, stage: StageName, result: StageResult) -> Submission:
        return self.spool.report_stage(lease, stage, result)

    def complete(self, lease: Lease, error: str | None = None) -> Submission:
        return self.spool.complete(lease, error=error)

    def release(self, lease: Lease, reason: str) -> Submission:
        return self.spool.release(lease, reason)
