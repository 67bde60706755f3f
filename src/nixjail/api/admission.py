"""Whether a new submission may join the queues: decided here once, for
`/v1/submissions` and every compatibility front end alike."""

from __future__ import annotations

from collections.abc import Callable

from nixjail.errors import NixjailError
from nixjail.models import Submission, SubmissionRequest
from nixjail.settings import Settings
from nixjail.spool import Spool

# What a refused submitter is told to wait before trying again.
QUEUE_FULL_RETRY_S = 5


class QueueFull(NixjailError):
    """The queues hold `api.max_queued` jobs: come back after `retry_after_s`."""

    def __init__(self, queued: int, retry_after_s: int = QUEUE_FULL_RETRY_S) -> None:
        self.queued = queued
        self.retry_after_s = retry_after_s
        self.reason = (f"{queued} jobs are waiting, the most this server queues; "
                       f"try again in {retry_after_s} s")
        super().__init__(self.reason)


def check_room(spool: Spool, settings: Settings, count: int = 1) -> None:
    """QueueFull unless `count` more submissions fit under `api.max_queued`."""
    queued = spool.count_queued()
    if queued + count > settings.api.max_queued:
        raise QueueFull(queued)


def admit(spool: Spool, settings: Settings, request: SubmissionRequest, owner: str | None,
          kick: Callable[[], None], *, created: Callable[[], None] | None = None,
          room_checked: bool = False) -> Submission:
    """Store a validated request as `owner`'s new submission and wake the runner;
    QueueFull when the queues are full (unless the caller checked for a batch)."""
    if not room_checked:
        check_room(spool, settings)
    submission = spool.create(request, owner=owner)
    if created is not None:
        created()
    kick()
    return submission
