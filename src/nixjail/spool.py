"""The spool: the one source of truth every nixjail service coordinates through.

Layout::

    SPOOL/submissions/ID.json       each submission (durable, replaced atomically)
    SPOOL/queues/QUEUE/ID           a job waiting in QUEUE ("dependencies" or "run")
    SPOOL/leased/QUEUE/ID           a job someone holds
    SPOOL/ended/STATUS/ID           an index of ended submissions by status
    SPOOL/owners/OWNER/ID           an index of submissions by owner (the tenant)
    SPOOL/environments/NAME.json    a catalog environment the cache builder built
    SPOOL/built/DIGEST.json         the environment a shell.nix was last built as
    RUN/leases/ID.json              who holds it, its token and deadline (tmpfs)
    RUN/spool.lock                  serialises read-modify-write of records

The submission owns its status (`Submission.start`, `record`, `complete`,
`requeue`, `cancel`); the spool stores it under its lock and moves its job
between the queues. Waiting (for a submission to end, for a job to come)
sleeps on inotify (`nixjail.watch`) and re-reads only what changed.

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
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nixjail import watch
from nixjail.errors import Conflict, LeaseLost, NotFound
from nixjail.models import (
    CATALOG_NAME,
    ENDED_STATUSES,
    CaseResult,
    Environment,
    ResolvedStageLimits,
    StageName,
    StageResult,
    Submission,
    SubmissionRequest,
    SubmissionStatus,
    utcnow,
)
from nixjail.settings import Settings

# A leased entry whose lease record never appeared (the holder died between
# the rename and the write) is treated as expired after this long.
ORPHAN_GRACE_S = 5.0
# A queue entry is written before its record: a waiting lease looks again after
# this long even when nothing else changed, in case it saw the entry too early.
RECORD_GRACE_S = 0.05
# A waiting lease looks at its queue again at least this often even without a
# wake-up: a test that waited 30 s in one lease saw the queued job missed under
# load (cause not found yet); every runner already leases in waits of 1 s.
RELOOK_S = 1.0


class Queue(StrEnum):
    dependencies = "dependencies"
    run = "run"


class Lease(BaseModel):
    """A held job: who holds it, until when, and the token that proves it.

    The spool keeps it under RUN/leases; the holder gets a copy, and every
    renewal, report and completion shows its token."""

    model_config = ConfigDict(frozen=True)

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
    """Write `data` to `path` so that readers see the old or the new file whole.

    The file is readable and writable by its group as far as the umask lets
    (0660 less the umask), never by others: under systemd the root cache
    builder and the units running as nixjail share the spool through the
    group nixjail, and mkstemp's 0600 would lock one out of the other's files."""
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o660)
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
                 max_attempts: int = 3, dependency_jobs: bool = True,
                 resolve_limits: Callable[[SubmissionRequest], ResolvedStageLimits]
                 | None = None, reuse_built_s: float = 0, nixpkgs: str = "") -> None:
        """`dependency_jobs` false sends every submission straight to the
        workers, which then build its environment in its own container.
        `resolve_limits` fills in a request's limits when it is accepted
        (the server's defaults; built-in ones without settings). A shell.nix
        whose environment was built less than `reuse_built_s` ago with the
        nixpkgs setting `nixpkgs` skips the dependencies job."""
        self.spool_dir = Path(spool_dir)
        self.dependency_jobs = dependency_jobs
        self.reuse_built_s = reuse_built_s
        self.nixpkgs = nixpkgs
        self.run_dir = Path(run_dir)
        self.lease_s = lease_s
        self.max_attempts = max_attempts
        self.resolve_limits = resolve_limits or Settings().resolve_limits
        self._submissions = self.spool_dir / "submissions"
        self._owners = self.spool_dir / "owners"
        self._leases = self.run_dir / "leases"
        self._environments = self.spool_dir / "environments"
        self._built = self.spool_dir / "built"
        self.callbacks_dir = self.spool_dir / "callbacks"
        self.failed_callbacks_dir = self.callbacks_dir / "failed"
        for directory in (self._submissions, self._owners, self._leases,
                          self._environments, self._built, self.callbacks_dir,
                          self.failed_callbacks_dir):
            directory.mkdir(parents=True, exist_ok=True)
        for queue in Queue:
            self._queued_dir(queue).mkdir(parents=True, exist_ok=True)
            self._leased_dir(queue).mkdir(parents=True, exist_ok=True)
        for status in ENDED_STATUSES:
            self._ended_dir(status).mkdir(parents=True, exist_ok=True)
        self._lock_path = self.run_dir / "spool.lock"

    @classmethod
    def from_settings(cls, settings: Settings) -> Spool:
        return cls(settings.spool_dir, settings.run_dir, lease_s=settings.lease_s,
                   max_attempts=settings.max_attempts,
                   dependency_jobs=settings.cache_builder.enabled,
                   resolve_limits=settings.resolve_limits,
                   reuse_built_s=settings.cache_builder.reuse_built_s,
                   nixpkgs=str(settings.cache_builder.nixpkgs or ""))

    # -- paths ------------------------------------------------------------

    def _queued_dir(self, queue: Queue) -> Path:
        return self.spool_dir / "queues" / queue

    def _leased_dir(self, queue: Queue) -> Path:
        return self.spool_dir / "leased" / queue

    def _ended_dir(self, status: SubmissionStatus) -> Path:
        return self.spool_dir / "ended" / status

    def _record_path(self, submission_id: str) -> Path:
        # Ids are generated here and checked on the way in; refuse anything
        # else so no caller can name a path outside the spool.
        if not submission_id.isalnum() or not submission_id.isascii():
            raise NotFound(f"no submission {submission_id!r}")
        return self._submissions / f"{submission_id}.json"

    def _lease_path(self, submission_id: str) -> Path:
        return self._leases / f"{submission_id}.json"

    def _owner_dir(self, owner: str) -> Path:
        # Owners are tenant names (nixjail.api.auth.TENANT_PATTERN); refuse
        # anything that could name a path outside the index.
        if not owner or owner.startswith(".") or "/" in owner or "\0" in owner:
            raise ValueError(f"not a tenant name: {owner!r}")
        return self._owners / owner

    def _owned_path(self, owner: str, submission_id: str) -> Path:
        return self._owner_dir(owner) / submission_id

    def directories(self) -> list[Path]:
        """Every directory the spool writes to."""
        dirs = [self._submissions, self._owners, self._leases]
        dirs += [self._queued_dir(q) for q in Queue] + [self._leased_dir(q) for q in Queue]
        return dirs + [self._ended_dir(s) for s in sorted(ENDED_STATUSES)] + [
            self._environments, self.callbacks_dir, self.failed_callbacks_dir]

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

    def get(self, submission_id: str, *, owner: str | None = None) -> Submission:
        """The submission; with `owner`, only if that tenant owns it: another's
        is NotFound, as an unknown id is, so ids cannot be probed."""
        path = self._record_path(submission_id)
        self._owned_by(owner, submission_id)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no submission {submission_id!r}") from None
        submission = Submission.model_validate_json(data)
        self._owned_by(owner, submission_id, submission)
        return submission

    def _owned_by(self, owner: str | None, submission_id: str,
                  submission: Submission | None = None) -> None:
        """NotFound unless `owner` (if given) owns the submission: by its index
        entry (one look-up, whether the id is unknown or another's), and by
        the record when given."""
        if owner is not None and (
                not self._owned_path(owner, submission_id).exists()
                or (submission is not None and submission.owner != owner)):
            raise NotFound(f"no submission {submission_id!r}")

    def _change(self, submission_id: str, change: Callable[[Submission], object],
                queue: Queue | None = None,
                then: Callable[[Submission, object], None] | None = None,
                ) -> tuple[Submission, object]:
        """Apply one transition under the lock and store the result: the one
        place a record changes. `queue` is the job's queue: once the
        submission ends, its entries go. `then` runs after the record is
        stored, still under the lock (to queue the next job). What `change`
        returned comes back with the submission."""
        with self._locked():
            submission = self.get(submission_id)
            was_ended = submission.status.ended
            outcome = change(submission)
            submission.updated_at = utcnow()
            ending = submission.status.ended and not was_ended
            if ending and submission.request.callback_url is not None:
                # The outbox entry, the promise of a callback, goes before the
                # record that ends it, so a crash in between cannot lose it;
                # `owed_callback` drops one whose record did not end.
                atomic_write(self.callbacks_dir / submission.id, b"")
            self._write(submission)
            if then is not None:
                then(submission, outcome)
            if ending:
                atomic_write(self._ended_dir(submission.status) / submission.id, b"")
                for q in Queue:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self._queued_dir(q) / submission.id)
                if queue is not None:
                    self._drop_lease(queue, submission.id)
            return submission, outcome

    def list(self, *, statuses: set[SubmissionStatus] | None = None,
             owner: str | None = None, after: str | None = None,
             limit: int = 50) -> tuple[list[Submission], str | None]:
        """Submissions newest first (only `owner`'s, when given); `after` is the
        id the previous page ended with.

        A filter reads only the submissions the indexes name (the queues, the
        ended index, the owner's index), never every record."""
        chosen: set[str] | None = None
        if owner is not None:
            owned = self._owner_dir(owner)
            chosen = set(_names(owned)) if owned.is_dir() else set()
        if statuses:
            with_status = set().union(*(self._ids_with(status) for status in statuses))
            chosen = with_status if chosen is None else chosen & with_status
        if chosen is not None:
            ids = sorted(chosen, reverse=True)
        else:
            ids = sorted((name[:-5] for name in os.listdir(self._submissions)
                          if name.endswith(".json") and not name.startswith(".")),
                         reverse=True)
        if after is not None:
            ids = [i for i in ids if i < after]
        page: list[Submission] = []
        for submission_id in ids:
            try:
                submission = self.get(submission_id)
            except NotFound:
                continue  # deleted since the listing
            if statuses and submission.status not in statuses:
                continue  # moved on since the listing
            if owner is not None and submission.owner != owner:
                continue
            if len(page) == limit:
                return page, page[-1].id
            page.append(submission)
        return page, None

    def _ids_with(self, status: SubmissionStatus) -> set[str]:
        if status.ended:
            return set(_names(self._ended_dir(status)))
        if status is SubmissionStatus.queued:
            return {i for q in Queue for i in _names(self._queued_dir(q))}
        # building and running: leased, of the queue whose job that is
        queue = Queue.dependencies if status is SubmissionStatus.building else Queue.run
        return set(_names(self._leased_dir(queue)))

    def count_queued(self) -> int:
        """Jobs waiting for a worker or a cache builder, all queues."""
        return sum(len(_names(self._queued_dir(q))) for q in Queue)

    def delete_ended(self, older_than_s: float, *, now: float | None = None) -> list[str]:
        """Delete submissions that ended more than `older_than_s` ago."""
        cutoff = (time.time() if now is None else now) - older_than_s
        deleted = []
        for status in ENDED_STATUSES:
            for submission_id in _names(self._ended_dir(status)):
                try:
                    submission = self.get(submission_id)
                except NotFound:
                    submission = None
                if submission is not None:
                    finished = submission.finished_at or submission.updated_at
                    if finished.timestamp() > cutoff:
                        continue
                with self._locked():
                    self._remove(submission_id, status,
                                 submission.owner if submission is not None else None)
                deleted.append(submission_id)
        return deleted

    def delete(self, submission_id: str, *, owner: str | None = None) -> Submission:
        """Delete one ended submission (with `owner`, only that tenant's: see
        `get`); one that has not ended is a Conflict."""
        self._owned_by(owner, submission_id)
        with self._locked():
            submission = self.get(submission_id)
            self._owned_by(owner, submission_id, submission)
            if not submission.status.ended:
                raise Conflict(f"submission {submission_id} has not ended "
                               f"({submission.status})")
            self._remove(submission_id, submission.status, submission.owner)
        return submission

    def _remove(self, submission_id: str, status: SubmissionStatus,
                owner: str | None) -> None:
        # Under the lock. A callback still owed goes too: it would tell of nothing.
        paths = [self._record_path(submission_id), self._ended_dir(status) / submission_id,
                 self.callbacks_dir / submission_id, self.failed_callbacks_dir / submission_id]
        if owner is not None:
            paths.append(self._owned_path(owner, submission_id))
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    # -- submitting ---------------------------------------------------------

    def create(self, request: SubmissionRequest, *, owner: str | None = None) -> Submission:
        """Store a new submission of `owner` (a tenant; None without tenants),
        its limits resolved now, and queue its first job.

        The owner's index entry and the queue entry are written before the
        record, and workers skip entries whose record does not exist yet, so
        the submission is complete once its record is; a crash in between
        leaves only entries without a record, which `expire_leases` removes
        from the queue and listings pass over. Nothing acknowledged is lost.
        """
        submission = Submission.new(request, self.resolve_limits(request), owner=owner,
                                    built=self.built_environment(request))
        if owner is not None:
            owned = self._owned_path(owner, submission.id)
            owned.parent.mkdir(exist_ok=True)
            atomic_write(owned, b"")
        self._enqueue(submission.id, self._first_queue(submission))
        self._write(submission)
        return submission

    def _first_queue(self, submission: Submission) -> Queue:
        if submission.request.cache and self.dependency_jobs \
                and submission.environment is None:
            return Queue.dependencies
        return Queue.run

    # -- environments built before -----------------------------------------

    def _built_path(self, shell_nix: str) -> Path:
        material = json.dumps({"shell_nix": shell_nix, "nixpkgs": self.nixpkgs},
                              sort_keys=True)
        return self._built / f"{hashlib.sha256(material.encode()).hexdigest()}.json"

    def built_environment(self, request: SubmissionRequest) -> Environment | None:
        """The environment this request's shell.nix was built as less than
        `reuse_built_s` ago, when it asks for the cache builders' one; else None."""
        if not (request.cache and self.dependency_jobs and self.reuse_built_s > 0
                and request.shell_nix is not None):
            return None
        path = self._built_path(request.shell_nix)
        try:
            if time.time() - path.stat().st_mtime >= self.reuse_built_s:
                return None
            return Environment.model_validate_json(path.read_bytes())
        except (FileNotFoundError, ValidationError):
            return None

    def _remember_built(self, submission: Submission) -> None:
        # Its mtime is when the cache builder last found or built it, which is
        # also when it last renewed the environment's GC roots.
        if submission.environment is not None and submission.request.shell_nix is not None:
            atomic_write(self._built_path(submission.request.shell_nix),
                         submission.environment.model_dump_json().encode())

    def forget_built(self) -> None:
        """Reuse nothing built so far (`nixjail gc` removed GC roots)."""
        for name in _names(self._built):
            with contextlib.suppress(FileNotFoundError):
                (self._built / name).unlink()

    def _enqueue(self, submission_id: str, queue: Queue) -> None:
        atomic_write(self._queued_dir(queue) / submission_id, b"")

    def cancel(self, submission_id: str, *, owner: str | None = None) -> Submission:
        """End a submission as cancelled (with `owner`, only that tenant's: see
        `get`); its holder learns it at its next renewal."""
        self._owned_by(owner, submission_id)

        def cancel(submission: Submission) -> None:
            self._owned_by(owner, submission_id, submission)
            submission.cancel()

        return self._change(submission_id, cancel)[0]

    def wait(self, submission_id: str, timeout_s: float,
             until: Callable[[Submission], bool] | None = None) -> Submission:
        """The submission once it has ended (or `until` holds), or as it is at
        the timeout. Sleeps until its record changes; reads it only then."""
        until = until or (lambda s: s.status.ended)
        deadline = time.monotonic() + timeout_s
        with watch.watcher().changes(self._submissions, f"{submission_id}.json") as change:
            while True:
                submission = self.get(submission_id)
                remaining = deadline - time.monotonic()
                if until(submission) or remaining <= 0:
                    return submission
                change.wait(remaining)

    # -- leasing ------------------------------------------------------------

    def queued(self, queue: Queue) -> list[str]:
        return _names(self._queued_dir(queue))

    def lease(self, queue: Queue, holder: str, *, wait_s: float = 0) -> Lease | None:
        """Take the oldest job of `queue`, waiting up to `wait_s` for one to come."""
        deadline = time.monotonic() + wait_s
        with contextlib.ExitStack() as stack:
            change = None
            while True:
                unfinished = False  # an entry whose record is still being written
                for submission_id in self.queued(queue):
                    lease = self._try_lease(queue, submission_id, holder)
                    if lease is not None:
                        return lease
                    unfinished = unfinished or not self._record_path(submission_id).exists()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                if change is None:
                    change = stack.enter_context(
                        watch.watcher().changes(self._queued_dir(queue)))
                    continue  # look again: something may have come meanwhile
                change.wait(min(remaining, RECORD_GRACE_S if unfinished else RELOOK_S))

    def _try_lease(self, queue: Queue, submission_id: str, holder: str) -> Lease | None:
        if not self._record_path(submission_id).exists():
            return None  # still being created
        try:
            os.rename(self._queued_dir(queue) / submission_id,
                      self._leased_dir(queue) / submission_id)
        except FileNotFoundError:
            return None  # another worker won it, or it was cancelled
        _fsync_dir(self._leased_dir(queue))
        lease = Lease(submission_id=submission_id, queue=queue,
                      token=secrets.token_urlsafe(16), holder=holder,
                      deadline=time.time() + self.lease_s)
        atomic_write(self._lease_path(submission_id), lease.model_dump_json().encode())
        try:
            self._change(submission_id, lambda s: s.start(queue.value))
        except (LeaseLost, NotFound):
            self._drop_lease(queue, submission_id)
            return None
        return lease

    def _read_lease(self, submission_id: str) -> Lease | None:
        try:
            return Lease.model_validate_json(self._lease_path(submission_id).read_bytes())
        except (FileNotFoundError, ValidationError):
            return None

    def _check(self, lease: Lease) -> Lease:
        """The stored lease, when `lease` still holds it."""
        record = self._read_lease(lease.submission_id)
        if record is None or not hmac.compare_digest(record.token.encode(),
                                                     lease.token.encode()):
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
            renewed = record.model_copy(update={"deadline": time.time() + self.lease_s})
            atomic_write(self._lease_path(lease.submission_id),
                         renewed.model_dump_json().encode())
            return renewed

    def held(self, lease: Lease) -> None:
        """LeaseLost unless `lease` is still held (checked again under the lock
        by every change it makes)."""
        self._check(lease)

    def _leased_change(self, lease: Lease, change: Callable[[Submission], object],
                       then: Callable[[Submission, object], None] | None = None,
                       ) -> tuple[Submission, object]:
        def checked(submission: Submission) -> object:
            self._check(lease)
            return change(submission)

        return self._change(lease.submission_id, checked, lease.queue, then)

    def report_stage(self, lease: Lease, stage: StageName, result: StageResult) -> Submission:
        """Record one stage's result as soon as it is known."""
        return self._leased_change(
            lease, lambda s: s.record(lease.queue.value, stage, result))[0]

    def report_case(self, lease: Lease, index: int, result: CaseResult) -> Submission:
        """Record one test case's result as soon as it is known."""
        return self._leased_change(lease, lambda s: s.record_case(index, result))[0]

    def complete(self, lease: Lease, *, error: str | None = None,
                 environment: Environment | None = None) -> Submission:
        """End the leased job: a dependencies job that built the environment
        queues the run job; any other ends the submission (`Submission.complete`)."""
        def then(submission: Submission, run_follows: object) -> None:
            if run_follows:
                self._enqueue(submission.id, Queue.run)
                self._remember_built(submission)
            self._drop_lease(lease.queue, lease.submission_id)

        return self._leased_change(
            lease, lambda s: s.complete(lease.queue.value, error=error,
                                        environment=environment), then)[0]

    def release(self, lease: Lease, reason: str, *, tried: bool = True) -> Submission:
        """Give the job back (the holder could not finish it); it counts as an
        attempt unless not `tried` (the host failed before the submission ran)."""
        self._check(lease)
        return self._requeue(lease.queue, lease.submission_id, reason, holder=lease.holder,
                             tried=tried)

    def release_held_by(self, holder_prefix: str, reason: str, *,
                        keep: str | None = None,
                        alive: Callable[[str], bool] | None = None) -> list[str]:
        """Give back every lease whose holder starts with `holder_prefix`
        (a restarted runner's predecessor), except those of `keep` and of
        holders `alive` says still run."""
        released = []
        for queue in Queue:
            for submission_id in self.leased(queue):
                record = self._read_lease(submission_id)
                if (record is None or not record.holder.startswith(holder_prefix)
                        or record.holder == keep
                        or (alive is not None and alive(record.holder))):
                    continue
                self._requeue(queue, submission_id, reason, holder=record.holder)
                released.append(submission_id)
        return released

    # -- expiry -------------------------------------------------------------

    def _requeue(self, queue: Queue, submission_id: str, reason: str, *,
                 holder: str | None = None, tried: bool = True) -> Submission:
        """Put a leased job back in its queue, or end it after max attempts.
        With `holder`, only while that holder still has the lease."""
        def change(submission: Submission) -> bool | None:
            if holder is not None:
                record = self._read_lease(submission_id)
                if record is not None and record.holder != holder:
                    return None  # leased again meanwhile: leave it be
            return submission.requeue(reason, self.max_attempts, tried=tried)

        def then(submission: Submission, back: object) -> None:
            if back is None:
                return
            if back:
                self._enqueue(submission_id, queue)
            self._drop_lease(queue, submission_id)

        return self._change(submission_id, change, queue, then)[0]

    def leased(self, queue: Queue) -> list[str]:
        return _names(self._leased_dir(queue))

    def lease_of(self, submission_id: str) -> Lease | None:
        return self._read_lease(submission_id)

    def expire_leases(self, *, holder_alive: Callable[[str], bool] | None = None,
                      now: float | None = None) -> list[str]:
        """Requeue every job whose lease is past its deadline or whose holder is gone.

        Returns the ids it requeued or ended.
        """
        now = time.time() if now is None else now
        touched = []
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

    # -- the environments catalog ------------------------------------------

    def publish_environment(self, name: str, environment: Environment, *,
                            shell_nix_sha256: str) -> PublishedEnvironment:
        """Record that catalog environment `name` is built as `environment`
        from the shell.nix of that SHA-256 (which tells an edited entry from
        the one that was built)."""
        record = PublishedEnvironment(environment=environment,
                                      shell_nix_sha256=shell_nix_sha256, built_at=utcnow())
        atomic_write(self._environments / f"{_catalog_name(name)}.json",
                     record.model_dump_json().encode())
        return record

    def published_environments(self) -> dict[str, PublishedEnvironment]:
        """Every catalog environment published, by name; unreadable records left out."""
        published = {}
        for entry in _names(self._environments):
            name = entry.removesuffix(".json")
            if name == entry or not CATALOG_NAME.fullmatch(name):
                continue
            try:
                published[name] = PublishedEnvironment.model_validate_json(
                    (self._environments / entry).read_bytes())
            except (FileNotFoundError, ValidationError):
                continue  # removed meanwhile, or not written by nixjail
        return published

    # -- callbacks (sent by nixjail.callbacks) ------------------------------

    def callbacks_due(self) -> list[str]:
        """The ids in the callback outbox, oldest first."""
        return [name for name in _names(self.callbacks_dir)
                if (self.callbacks_dir / name).is_file()]

    def owed_callback(self, submission_id: str) -> Submission | None:
        """The ended submission whose callback the outbox entry promises, or
        None after dropping an entry that promises nothing: its submission is
        gone, or did not end (a crash between the entry and the record; the
        end writes it again). Under the lock, so never one mid-change."""
        with self._locked():
            try:
                submission = self.get(submission_id)
            except NotFound:
                submission = None
            if submission is None or not submission.status.ended:
                self.drop_callback(submission_id)
                return None
            return submission

    def drop_callback(self, submission_id: str, *, failed: bool = False) -> None:
        """Remove the outbox entry: it was delivered, or (`failed`) it is kept
        in callbacks/failed/ for the operator."""
        entry = self.callbacks_dir / submission_id
        with contextlib.suppress(FileNotFoundError):
            if failed:
                os.rename(entry, self.failed_callbacks_dir / submission_id)
                _fsync_dir(self.failed_callbacks_dir)
            else:
                entry.unlink()


def _names(directory: Path) -> list[str]:
    """The entries of a spool directory, oldest id first; temporary files left out."""
    return sorted(name for name in os.listdir(directory) if not name.startswith("."))


def _catalog_name(name: str) -> str:
    if not CATALOG_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is no catalog environment name")
    return name


class PublishedEnvironment(BaseModel):
    """SPOOL/environments/NAME.json: a catalog environment the cache builder built."""

    model_config = ConfigDict(extra="forbid")

    environment: Environment
    shell_nix_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    built_at: datetime


def shell_nix_sha256(text: str) -> str:
    """The digest a published environment is matched against its catalog entry by."""
    return hashlib.sha256(text.encode()).hexdigest()
