"""The spool: the one source of truth every nixjail service coordinates through.

Layout::

    SPOOL/submissions/ID.json       each submission (durable, replaced atomically)
    SPOOL/queues/QUEUE/ID           a job waiting in QUEUE ("dependencies" or "run")
    SPOOL/leased/QUEUE/ID           a job someone holds
    RUN/leases/ID.json              who holds it, its token and deadline (tmpfs)
    RUN/spool.lock                  serialises read-modify-write of records

A worker leases a job by renaming its queue entry into `leased/`: rename is
atomic, so of many workers exactly one wins. The lease record lives under RUN,
which is a tmpfs in production: a reboot drops every lease and
`expire_leases` requeues their jobs, since a leased entry without a live lease
is an expired one. Every file is written to a temporary name, fsynced and
renamed into place, so a process killed at any instant leaves either the old
file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ValidationError

from nixjail.errors import Conflict, InvalidInput, LeaseLost, NotFound
from nixjail.models import (
    STAGES,
    Environment,
    StageName,
    StageResult,
    StageStatus,
    Submission,
    SubmissionRequest,
    SubmissionStatus,
    utcnow,
)
from nixjail.settings import Settings

# A leased entry whose lease record never appeared (the holder died between
# the rename and the write) is treated as expired after this long.
ORPHAN_GRACE_S = 5.0
POLL_S = 0.05


class Queue(StrEnum):
    dependencies = "dependencies"
    run = "run"


class LeaseRecord(BaseModel):
    submission_id: str
    queue: Queue
    token: str
    holder: str
    deadline: float


@dataclass(frozen=True)
class Lease:
    """What a worker holds: enough to renew, report and complete."""

    submission_id: str
    queue: Queue
    token: str
    holder: str
    deadline: float


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old or the new file whole."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


class Spool:
    def __init__(self, spool_dir: Path, run_dir: Path, *, lease_s: float = 30,
                 max_attempts: int = 3, dependency_jobs: bool = True) -> None:
        """`dependency_jobs` false sends every submission straight to the
        workers, which then build its environment in its own container."""
        self.spool_dir = Path(spool_dir)
        self.dependency_jobs = dependency_jobs
        self.run_dir = Path(run_dir)
        self.lease_s = lease_s
        self.max_attempts = max_attempts
        self._submissions = self.spool_dir / "submissions"
        self._leases = self.run_dir / "leases"
        for directory in (self._submissions, self._leases):
            directory.mkdir(parents=True, exist_ok=True)
        for queue in Queue:
            self._queued_dir(queue).mkdir(parents=True, exist_ok=True)
            self._leased_dir(queue).mkdir(parents=True, exist_ok=True)
        self._lock_path = self.run_dir / "spool.lock"

    # -- paths ------------------------------------------------------------

    def _queued_dir(self, queue: Queue) -> Path:
        return self.spool_dir / "queues" / queue

    def _leased_dir(self, queue: Queue) -> Path:
        return self.spool_dir / "leased" / queue

    def _record_path(self, submission_id: str) -> Path:
        # Ids are generated here and checked on the way in; refuse anything
        # else so no caller can name a path outside the spool.
        if not submission_id.isalnum() or not submission_id.isascii():
            raise NotFound(f"no submission {submission_id!r}")
        return self._submissions / f"{submission_id}.json"

    def _lease_path(self, submission_id: str) -> Path:
        return self._leases / f"{submission_id}.json"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self._lock_path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- records ----------------------------------------------------------

    def _write(self, submission: Submission) -> None:
        atomic_write(self._record_path(submission.id),
                     submission.model_dump_json().encode())

    def get(self, submission_id: str) -> Submission:
        path = self._record_path(submission_id)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no submission {submission_id!r}") from None
        return Submission.model_validate_json(data)

    def _update(self, submission_id: str,
                change: Callable[[Submission], None]) -> Submission:
        with self._locked():
            submission = self.get(submission_id)
            change(submission)
            submission.updated_at = utcnow()
            self._write(submission)
            return submission

    def list(self, *, statuses: set[SubmissionStatus] | None = None,
             after: str | None = None, limit: int = 50) -> tuple[list[Submission], str | None]:
        """Submissions newest first; `after` is the id the previous page ended with."""
        ids = sorted((name[:-5] for name in os.listdir(self._submissions)
                      if name.endswith(".json") and not name.startswith(".")), reverse=True)
        if after is not None:
            ids = [i for i in ids if i < after]
        page: list[Submission] = []
        for submission_id in ids:
            try:
                submission = self.get(submission_id)
            except NotFound:
                continue  # deleted since the listing
            if statuses and submission.status not in statuses:
                continue
            if len(page) == limit:
                return page, page[-1].id
            page.append(submission)
        return page, None

    # -- submitting ---------------------------------------------------------

    def create(self, request: SubmissionRequest) -> Submission:
        """Store a new submission and queue its first job.

        The queue entry is written before the record and workers skip entries
        whose record does not exist yet, so the submission is complete once
        its record is; a crash in between leaves only an entry without a
        record, which `expire_leases` removes. Nothing acknowledged is lost.
        """
        submission = Submission.new(request)
        self._enqueue(submission.id, self._first_queue(submission))
        self._write(submission)
        return submission

    @classmethod
    def from_settings(cls, settings: Settings) -> Spool:
        return cls(settings.spool_dir, settings.run_dir, lease_s=settings.lease_s,
                   max_attempts=settings.max_attempts,
                   dependency_jobs=settings.cache_builder.enabled)

    def _first_queue(self, submission: Submission) -> Queue:
        if submission.request.cache and self.dependency_jobs:
            return Queue.dependencies
        return Queue.run

    def _enqueue(self, submission_id: str, queue: Queue) -> None:
        atomic_write(self._queued_dir(queue) / submission_id, b"")

    def cancel(self, submission_id: str) -> Submission:
        """End a submission as cancelled; its holder learns it at its next renewal."""
        def change(submission: Submission) -> None:
            if submission.status.ended:
                raise Conflict(f"submission {submission_id} has already ended "
                               f"as {submission.status}")
            self._end(submission, SubmissionStatus.cancelled, None)

        submission = self._update(submission_id, change)
        for queue in Queue:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._queued_dir(queue) / submission_id)
        return submission

    def wait(self, submission_id: str, timeout_s: float,
             until: Callable[[Submission], bool] | None = None) -> Submission:
        """The submission once it has ended (or `until` holds), or as it is at the timeout."""
        until = until or (lambda s: s.status.ended)
        deadline = time.monotonic() + timeout_s
        while True:
            submission = self.get(submission_id)
            if until(submission) or time.monotonic() >= deadline:
                return submission
            time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))

    # -- leasing ------------------------------------------------------------

    def queued(self, queue: Queue) -> list[str]:
        return sorted(name for name in os.listdir(self._queued_dir(queue))
                      if not name.startswith("."))

    def lease(self, queue: Queue, holder: str, *, wait_s: float = 0) -> Lease | None:
        """Take the oldest job of `queue`, waiting up to `wait_s` for one to come."""
        deadline = time.monotonic() + wait_s
        while True:
            for submission_id in self.queued(queue):
                lease = self._try_lease(queue, submission_id, holder)
                if lease is not None:
                    return lease
            if time.monotonic() >= deadline:
                return None
            time.sleep(POLL_S)

    def _try_lease(self, queue: Queue, submission_id: str, holder: str) -> Lease | None:
        if not self._record_path(submission_id).exists():
            return None  # still being created
        try:
            os.rename(self._queued_dir(queue) / submission_id,
                      self._leased_dir(queue) / submission_id)
        except FileNotFoundError:
            return None  # another worker won it, or it was cancelled
        _fsync_dir(self._leased_dir(queue))
        record = LeaseRecord(submission_id=submission_id, queue=queue,
                             token=secrets.token_urlsafe(16), holder=holder,
                             deadline=time.time() + self.lease_s)
        atomic_write(self._lease_path(submission_id), record.model_dump_json().encode())
        stage_status = (SubmissionStatus.building if queue is Queue.dependencies
                        else SubmissionStatus.running)

        def start(submission: Submission) -> None:
            if submission.status.ended:
                raise Conflict("ended")
            submission.status = stage_status
            submission.attempts += 1

        try:
            self._update(submission_id, start)
        except (Conflict, NotFound):
            self._drop_lease(queue, submission_id)
            return None
        return Lease(**record.model_dump())

    def _read_lease(self, submission_id: str) -> LeaseRecord | None:
        try:
            return LeaseRecord.model_validate_json(self._lease_path(submission_id).read_bytes())
        except (FileNotFoundError, ValidationError):
            return None

    def _check(self, lease: Lease) -> LeaseRecord:
        record = self._read_lease(lease.submission_id)
        if record is None or record.token != lease.token:
            raise LeaseLost(f"the lease on {lease.submission_id} is no longer held")
        if record.deadline < time.time():
            raise LeaseLost(f"the lease on {lease.submission_id} has expired")
        return record

    def _drop_lease(self, queue: Queue, submission_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._leased_dir(queue) / submission_id)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._lease_path(submission_id))

    def renew(self, lease: Lease) -> Lease:
        """Extend the lease; LeaseLost when it is gone or its submission was cancelled."""
        with self._locked():
            record = self._check(lease)
            if self.get(lease.submission_id).status.ended:
                self._drop_lease(lease.queue, lease.submission_id)
                raise LeaseLost(f"submission {lease.submission_id} has ended")
            record.deadline = time.time() + self.lease_s
            atomic_write(self._lease_path(lease.submission_id),
                         record.model_dump_json().encode())
            return Lease(**record.model_dump())

    def report_stage(self, lease: Lease, stage: StageName, result: StageResult) -> Submission:
        """Record one stage's result as soon as it is known."""
        if lease.queue is Queue.dependencies and stage != "dependencies":
            raise InvalidInput("stage", "a dependencies job reports the dependencies stage only")
        with self._locked():
            self._check(lease)
            submission = self.get(lease.submission_id)
            if submission.status.ended:
                raise LeaseLost(f"submission {lease.submission_id} has ended")
            setattr(submission.stages, stage, result)
            submission.updated_at = utcnow()
            self._write(submission)
            return submission

    def complete(self, lease: Lease, *, error: str | None = None,
                 environment: Environment | None = None) -> Submission:
        """End the leased job.

        A dependencies job that succeeded records the `environment` it built
        and moves the submission to the run queue; any other job ends the
        submission with the status its stages call for, or `error` with the
        reason when the system failed.
        """
        with self._locked():
            self._check(lease)
            submission = self.get(lease.submission_id)
            if submission.status.ended:
                self._drop_lease(lease.queue, lease.submission_id)
                raise LeaseLost(f"submission {lease.submission_id} has ended")
            next_queue = None
            if error is not None:
                self._end(submission, SubmissionStatus.error, error)
            elif lease.queue is Queue.dependencies and _succeeded(submission.stages.dependencies):
                submission.status = SubmissionStatus.queued
                submission.environment = environment
                next_queue = Queue.run
            else:
                self._end(submission, submission.outcome(), None)
            submission.updated_at = utcnow()
            self._write(submission)
            if next_queue is not None:
                self._enqueue(submission.id, next_queue)
            self._drop_lease(lease.queue, lease.submission_id)
            return submission

    @staticmethod
    def _end(submission: Submission, status: SubmissionStatus, error: str | None) -> None:
        submission.status = status
        submission.error = error
        for stage in STAGES:
            if getattr(submission.stages, stage) is None:
                setattr(submission.stages, stage, StageResult.skipped())

    def release(self, lease: Lease, reason: str) -> Submission:
        """Give the job back (the holder could not finish it); counts as an attempt."""
        with self._locked():
            self._check(lease)
            return self._requeue(lease.queue, lease.submission_id, reason)

    def release_held_by(self, holder_prefix: str, reason: str, *,
                        keep: str | None = None) -> list[str]:
        """Give back every lease whose holder starts with `holder_prefix`
        (a restarted runner's predecessor), except those of `keep`."""
        released = []
        with self._locked():
            for queue in Queue:
                for submission_id in self.leased(queue):
                    record = self._read_lease(submission_id)
                    if (record is None or not record.holder.startswith(holder_prefix)
                            or record.holder == keep):
                        continue
                    self._requeue(queue, submission_id, reason)
                    released.append(submission_id)
        return released

    # -- expiry -------------------------------------------------------------

    def _requeue(self, queue: Queue, submission_id: str, reason: str) -> Submission:
        """Put a leased job back in its queue, or end it after max attempts.

        Called with the lock held.
        """
        submission = self.get(submission_id)
        if not submission.status.ended:
            if submission.attempts >= self.max_attempts:
                self._end(submission, SubmissionStatus.error,
                          f"gave up after {submission.attempts} attempts: {reason}")
            else:
                submission.status = SubmissionStatus.queued
                submission.error = None
            submission.updated_at = utcnow()
            self._write(submission)
            if not submission.status.ended:
                self._enqueue(submission_id, queue)
        self._drop_lease(queue, submission_id)
        return submission

    def leased(self, queue: Queue) -> list[str]:
        return sorted(name for name in os.listdir(self._leased_dir(queue))
                      if not name.startswith("."))

    def lease_of(self, submission_id: str) -> LeaseRecord | None:
        return self._read_lease(submission_id)

    def expire_leases(self, *, holder_alive: Callable[[str], bool] | None = None,
                      now: float | None = None) -> list[str]:
        """Requeue every job whose lease is past its deadline or whose holder is gone.

        Returns the ids it requeued or ended.
        """
        now = time.time() if now is None else now
        touched = []
        with self._locked():
            self._drop_unfinished_creations(now)
            for queue in Queue:
                for submission_id in self.leased(queue):
                    reason = self._expiry_reason(queue, submission_id, now, holder_alive)
                    if reason is None:
                        continue
                    try:
                        self._requeue(queue, submission_id, reason)
                    except NotFound:
                        self._drop_lease(queue, submission_id)
                    touched.append(submission_id)
        return touched

    def fall_back_to_workers(self, older_than_s: float, *,
                             now: float | None = None) -> list[str]:
        """Send dependencies jobs that have waited `older_than_s` to the workers.

        A stopped or stuck cache builder is then a cache miss, never an
        outage: the worker builds the environment in the submission's own
        container. The move is a rename, so a builder leasing the job at the
        same instant wins it or loses it whole.
        """
        now = time.time() if now is None else now
        moved = []
        for submission_id in self.queued(Queue.dependencies):
            try:
                created = self.get(submission_id).created_at.timestamp()
            except NotFound:
                continue
            if now - created < older_than_s:
                continue
            try:
                os.rename(self._queued_dir(Queue.dependencies) / submission_id,
                          self._queued_dir(Queue.run) / submission_id)
            except FileNotFoundError:
                continue  # leased or cancelled meanwhile
            _fsync_dir(self._queued_dir(Queue.run))
            moved.append(submission_id)
        return moved

    def _drop_unfinished_creations(self, now: float) -> None:
        """Remove queue entries whose creator died before writing the record."""
        for queue in Queue:
            for submission_id in self.queued(queue):
                entry = self._queued_dir(queue) / submission_id
                if self._record_path(submission_id).exists():
                    continue
                with contextlib.suppress(FileNotFoundError):
                    if now - entry.stat().st_ctime >= ORPHAN_GRACE_S:
                        entry.unlink()

    def _expiry_reason(self, queue: Queue, submission_id: str, now: float,
                       holder_alive: Callable[[str], bool] | None) -> str | None:
        record = self._read_lease(submission_id)
        if record is None:
            try:
                # rename updates ctime, not mtime: ctime is when it was leased
                leased_at = (self._leased_dir(queue) / submission_id).stat().st_ctime
            except FileNotFoundError:
                return None
            if now - leased_at < ORPHAN_GRACE_S:
                return None  # the holder may be writing its lease record right now
            return "the lease record is gone (its holder died, or the host restarted)"
        if record.deadline < now:
            return f"the lease held by {record.holder} expired"
        if holder_alive is not None and not holder_alive(record.holder):
            return f"the lease holder {record.holder} is gone"
        return None


def _succeeded(result: StageResult | None) -> bool:
    return result is not None and result.status is StageStatus.ok

