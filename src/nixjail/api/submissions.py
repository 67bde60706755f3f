"""`/v1/submissions`: submit, look up, list, long-poll and cancel."""

from __future__ import annotations

from collections.abc import Callable

import falcon

from nixjail.api.media import parse_body, parse_query, respond
from nixjail.api.schemas import ListQuery, WaitQuery
from nixjail.models import Submission, SubmissionPage, SubmissionRequest
from nixjail.settings import Settings
from nixjail.spool import Spool


class _Base:
    role = "submitter"

    def __init__(self, spool: Spool, settings: Settings) -> None:
        self.spool = spool
        self.settings = settings

    def _waited(self, submission: Submission, wait: float) -> Submission:
        wait = min(wait, self.settings.api.max_wait_s)
        if wait > 0 and not submission.status.ended:
            return self.spool.wait(submission.id, wait)
        return submission

    @staticmethod
    def _status(submission: Submission) -> int:
        return 200 if submission.status.ended else 202


class SubmissionCollection(_Base):
    def __init__(self, spool: Spool, settings: Settings, *, kick: Callable[[], None],
                 created: Callable[[], None]) -> None:
        super().__init__(spool, settings)
        self.kick = kick
        self.created = created

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        query = parse_query(req, WaitQuery)
        request = parse_body(req, SubmissionRequest, self.settings.api.max_body_bytes,
                             parse=lambda raw: self.settings.validate_request(raw, strict=True))
        submission = self.spool.create(request)
        self.created()
        self.kick()
        resp.location = f"{self.settings.api.public_url or ''}/v1/submissions/{submission.id}"
        submission = self._waited(submission, query.wait)
        respond(resp, submission, self._status(submission))

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        query = parse_query(req, ListQuery)
        items, next_cursor = self.spool.list(
            statuses=set(query.status) if query.status else None,
            after=query.cursor, limit=query.limit)
        respond(resp, SubmissionPage(items=items, next_cursor=next_cursor))


class SubmissionItem(_Base):
    def on_get(self, req: falcon.Request, resp: falcon.Response, submission_id: str) -> None:
        query = parse_query(req, WaitQuery)
        submission = self._waited(self.spool.get(submission_id), query.wait)
        respond(resp, submission)

    def on_delete(self, req: falcon.Request, resp: falcon.Response,
                  submission_id: str) -> None:
        respond(resp, self.spool.cancel(submission_id))
