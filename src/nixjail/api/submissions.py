"""`/v1/submissions`: submit, look up, list, long-poll and cancel.

Each request acts for its caller (`nixjail.api.auth.Caller`): a submission
is created as the caller's tenant's, and a submitter reaches only its
tenant's; another's is not found, as an unknown id is not."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

import falcon

from nixjail.api.admission import QueueFull, admit
from nixjail.api.auth import Caller
from nixjail.api.errors import ApiError
from nixjail.api.media import parse_body, parse_query, respond
from nixjail.api.schemas import FieldError, ItemQuery, ListQuery, WaitQuery
from nixjail.models import Submission, SubmissionPage, SubmissionRequest, SubmissionSummary
from nixjail.settings import Settings
from nixjail.spool import Spool


class WaitSlots:
    """At most `api.max_waiters` requests wait at once; the rest answer at
    once with the current state (and `Retry-After`), so waiting can never
    take the threads every other request needs."""

    def __init__(self, settings: Settings) -> None:
        self.max_wait_s = settings.api.max_wait_s
        self._slots = threading.BoundedSemaphore(settings.api.max_waiters)

    @contextlib.contextmanager
    def wait_for(self, wait_s: float, resp: falcon.Response) -> Iterator[float]:
        """How long this request may wait: `wait_s` capped, 0 when no slot is free."""
        wait_s = min(wait_s, self.max_wait_s)
        if wait_s <= 0:
            yield 0.0
            return
        if not self._slots.acquire(blocking=False):
            resp.set_header("Retry-After", "1")
            yield 0.0
            return
        try:
            yield wait_s
        finally:
            self._slots.release()


class _Base:
    role = "submitter"

    def __init__(self, spool: Spool, settings: Settings, waits: WaitSlots) -> None:
        self.spool = spool
        self.settings = settings
        self.waits = waits

    def _waited(self, submission: Submission, wait: float,
                resp: falcon.Response) -> Submission:
        if submission.status.ended:
            return submission
        with self.waits.wait_for(wait, resp) as wait_s:
            return self.spool.wait(submission.id, wait_s) if wait_s else submission

    @staticmethod
    def _status(submission: Submission) -> int:
        return 200 if submission.status.ended else 202

    @staticmethod
    def _caller(req: falcon.Request) -> Caller:
        # Set by AuthMiddleware for every resource with a role.
        return req.context.caller


class SubmissionCollection(_Base):
    def __init__(self, spool: Spool, settings: Settings, waits: WaitSlots, *,
                 kick: Callable[[], None], created: Callable[[], None]) -> None:
        super().__init__(spool, settings, waits)
        self.kick = kick
        self.created = created

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        query = parse_query(req, WaitQuery)
        request = parse_body(req, SubmissionRequest, self.settings.api.max_body_bytes,
                             parse=lambda raw: self.settings.validate_request(raw, strict=True))
        try:
            submission = admit(self.spool, self.settings, request, self._caller(req).tenant,
                               self.kick, created=self.created)
        except QueueFull as full:
            raise ApiError(429, "too many requests", full.reason,
                           [FieldError(field="queue", reason=full.reason)],
                           headers={"Retry-After": str(full.retry_after_s)}) from None
        resp.location = f"{self.settings.api.public_url or ''}/v1/submissions/{submission.id}"
        submission = self._waited(submission, query.wait, resp)
        respond(resp, submission, self._status(submission))

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        query = parse_query(req, ListQuery)
        items, next_cursor = self.spool.list(
            statuses=set(query.status) if query.status else None,
            owner=self._caller(req).owner, after=query.cursor, limit=query.limit)
        respond(resp, SubmissionPage(items=[SubmissionSummary.of(s) for s in items],
                                     next_cursor=next_cursor))


class SubmissionItem(_Base):
    def on_get(self, req: falcon.Request, resp: falcon.Response, submission_id: str) -> None:
        query = parse_query(req, ItemQuery)
        owner = self._caller(req).owner
        submission = self._waited(self.spool.get(submission_id, owner=owner), query.wait, resp)
        respond(resp, SubmissionSummary.of(submission) if query.view == "summary"
                else submission)

    def on_delete(self, req: falcon.Request, resp: falcon.Response,
                  submission_id: str) -> None:
        respond(resp, self.spool.cancel(submission_id, owner=self._caller(req).owner))
