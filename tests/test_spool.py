"""The spool's guarantees: atomic records, exactly-once leasing, expiry."""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nixjail.errors import Conflict, InvalidInput, LeaseLost, NotFound
from nixjail.models import (
    Environment,
    StageResult,
    StageStatus,
    SubmissionRequest,
    SubmissionStatus,
    new_submission_id,
)
from nixjail.settings import Settings
from nixjail.spool import ORPHAN_GRACE_S, Queue, Spool


def request(**overrides: object) -> SubmissionRequest:
    data = {"shell_nix": "{ pkgs ? import <nixpkgs> {} }: pkgs.mkShell {}",
            "run_sh": "echo hi", **overrides}
    return SubmissionRequest.model_validate(data)


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "spool", tmp_path / "run", lease_s=30, max_attempts=2)


def test_create_queues_for_the_cache_builder_or_the_workers(spool: Spool) -> None:
    cached = spool.create(request())
    uncached = spool.create(request(cache=False))
    assert spool.queued(Queue.dependencies) == [cached.id]
    assert spool.queued(Queue.run) == [uncached.id]
    assert spool.get(cached.id) == cached
    assert cached.status is SubmissionStatus.queued


def test_ids_sort_by_creation(spool: Spool) -> None:
    ids = [spool.create(request()).id for _ in range(5)]
    assert ids == sorted(ids)
    page, cursor = spool.list(limit=3)
    assert [s.id for s in page] == ids[::-1][:3]
    rest, end = spool.list(after=cursor, limit=3)
    assert [s.id for s in rest] == ids[::-1][3:]
    assert end is None


def test_ids_sort_by_creation_within_one_millisecond() -> None:
    ids = [new_submission_id() for _ in range(2000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(len(i) == 26 and i.isalnum() for i in ids)


def _id_after(turns: multiprocessing.connection.Connection, rounds: int) -> None:
    for _ in range(rounds):
        turns.recv()
        turns.send(new_submission_id())


def test_ids_sort_by_creation_across_processes() -> None:
    # Two processes take turns, each id made after the other's previous one
    # arrived: many turns fall within one millisecond.
    rounds = 300
    ours, theirs = multiprocessing.Pipe()
    other = multiprocessing.get_context("fork").Process(target=_id_after,
                                                        args=(theirs, rounds))
    other.start()
    ids = []
    try:
        for _ in range(rounds):
            ids.append(new_submission_id())
            ours.send(None)
            ids.append(ours.recv())
    finally:
        other.join(timeout=30)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_full_flow_through_both_queues(spool: Spool) -> None:
    submission = spool.create(request())
    lease = spool.lease(Queue.dependencies, "builder")
    assert lease is not None
    assert spool.get(submission.id).status is SubmissionStatus.building
    spool.report_stage(lease, "dependencies", StageResult(status=StageStatus.ok, cached=False))
    assert spool.complete(lease).status is SubmissionStatus.queued
    assert spool.queued(Queue.run) == [submission.id]
    assert spool.leased(Queue.dependencies) == []

    run_lease = spool.lease(Queue.run, "worker")
    assert run_lease is not None
    assert spool.get(submission.id).status is SubmissionStatus.running
    spool.report_stage(run_lease, "compile", StageResult.skipped())
    spool.report_stage(run_lease, "run", StageResult(status="nonzero_exit", exit_code=3))
    ended = spool.complete(run_lease)
    assert ended.status is SubmissionStatus.done  # whatever the program's exit code
    assert ended.stages.run is not None and ended.stages.run.exit_code == 3
    assert ended.attempts == 1  # tries of the run job: the dependencies job had its own
    assert ended.finished_at is not None and ended.finished_at >= ended.created_at
    assert spool.lease_of(submission.id) is None
    assert spool.leased(Queue.run) == [] and spool.queued(Queue.run) == []


def test_failed_dependencies_fail_the_submission(spool: Spool) -> None:
    submission = spool.create(request())
    lease = spool.lease(Queue.dependencies, "builder")
    spool.report_stage(lease, "dependencies", StageResult(status="time_limit"))
    ended = spool.complete(lease)
    assert ended.status is SubmissionStatus.failed
    assert ended.stages.compile.status is StageStatus.skipped
    assert ended.stages.run.status is StageStatus.skipped
    assert spool.queued(Queue.run) == []
    assert spool.get(submission.id).status is SubmissionStatus.failed


def test_compile_failure_fails_and_system_error_errors(spool: Spool) -> None:
    first = spool.create(request(cache=False))
    second = spool.create(request(cache=False))
    lease = spool.lease(Queue.run, "w")
    assert lease.submission_id == first.id
    spool.report_stage(lease, "compile", StageResult(status="nonzero_exit", exit_code=1))
    assert spool.complete(lease).status is SubmissionStatus.failed
    lease = spool.lease(Queue.run, "w")
    assert lease.submission_id == second.id
    ended = spool.complete(lease, error="container init failed: no nsjail")
    assert ended.status is SubmissionStatus.error
    assert ended.error == "container init failed: no nsjail"


def test_cancel_queued_and_running(spool: Spool) -> None:
    queued = spool.create(request(cache=False))
    cancelled = spool.cancel(queued.id)
    assert cancelled.status is SubmissionStatus.cancelled
    assert spool.queued(Queue.run) == []
    with pytest.raises(Conflict):
        spool.cancel(queued.id)

    running = spool.create(request(cache=False))
    lease = spool.lease(Queue.run, "w")
    spool.cancel(running.id)
    with pytest.raises(LeaseLost):
        spool.renew(lease)
    with pytest.raises(LeaseLost):
        spool.report_stage(lease, "run", StageResult(status="ok"))
    assert spool.leased(Queue.run) == []


def test_unknown_and_hostile_ids(spool: Spool) -> None:
    for bad in ("nope", "../../etc/passwd", "a/b", ""):
        with pytest.raises(NotFound):
            spool.get(bad)


def test_expired_lease_is_requeued_then_ends_as_error(spool: Spool) -> None:
    submission = spool.create(request(cache=False))
    lease = spool.lease(Queue.run, "w1")
    assert spool.expire_leases(now=time.time() + 5) == []
    assert spool.expire_leases(now=time.time() + 31) == [submission.id]
    requeued = spool.get(submission.id)
    assert requeued.status is SubmissionStatus.queued and requeued.attempts == 1
    with pytest.raises(LeaseLost):
        spool.report_stage(lease, "run", StageResult(status="ok"))

    spool.lease(Queue.run, "w2")
    spool.expire_leases(now=time.time() + 31)
    ended = spool.get(submission.id)
    assert ended.status is SubmissionStatus.error
    assert "gave up after 2 attempts" in ended.error
    assert "w2" in ended.error
    assert spool.queued(Queue.run) == [] and spool.leased(Queue.run) == []


def test_dead_holder_is_expired_before_its_deadline(spool: Spool) -> None:
    submission = spool.create(request(cache=False))
    spool.lease(Queue.run, "runner@1.service")
    assert spool.expire_leases(holder_alive=lambda holder: True) == []
    assert spool.expire_leases(holder_alive=lambda holder: False) == [submission.id]
    assert spool.queued(Queue.run) == [submission.id]


def test_renewal_keeps_the_lease_and_needs_its_token(spool: Spool) -> None:
    spool.create(request(cache=False))
    lease = spool.lease(Queue.run, "w")
    time.sleep(0.01)
    renewed = spool.renew(lease)
    assert renewed.deadline > lease.deadline
    assert spool.expire_leases(now=renewed.deadline - 0.001) == []
    forged = type(lease)(**{**vars(lease), "token": "not-the-token"})
    with pytest.raises(LeaseLost):
        spool.renew(forged)


def test_reboot_drops_leases_and_expiry_requeues(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", tmp_path / "run")
    submission = spool.create(request(cache=False))
    spool.lease(Queue.run, "w")
    # A reboot empties the tmpfs that holds the leases.
    for name in os.listdir(tmp_path / "run" / "leases"):
        os.unlink(tmp_path / "run" / "leases" / name)
    after_boot = Spool(tmp_path / "spool", tmp_path / "run")
    assert after_boot.expire_leases(now=time.time() + ORPHAN_GRACE_S + 1) == [submission.id]
    assert after_boot.queued(Queue.run) == [submission.id]


def test_creation_cut_short_leaves_nothing_leasable(spool: Spool) -> None:
    # A creator killed between its two writes leaves a queue entry without record.
    (spool.spool_dir / "queues" / "run" / "0000000000000deadbeef00000").write_bytes(b"")
    assert spool.lease(Queue.run, "w") is None
    spool.expire_leases(now=time.time() + ORPHAN_GRACE_S + 1)
    assert spool.queued(Queue.run) == []


def test_no_temporary_file_survives_a_write(spool: Spool) -> None:
    for _ in range(3):
        spool.create(request())
    leftovers = [name for name in os.listdir(spool.spool_dir / "submissions")
                 if name.startswith(".")]
    assert leftovers == []


# -- concurrency: real processes racing for one queue ---------------------------


def _lease_all(spool_dir: str, run_dir: str, holder: str, results: multiprocessing.Queue,
               start: multiprocessing.Event) -> None:  # type: ignore[type-arg]
    spool = Spool(Path(spool_dir), Path(run_dir))
    start.wait()
    won = []
    while (lease := spool.lease(Queue.run, holder)) is not None:
        won.append(lease.submission_id)
        spool.report_stage(lease, "run", StageResult(status="ok", exit_code=0))
        spool.complete(lease)
    results.put(won)


@pytest.mark.parametrize("workers,jobs", [(8, 200)])
def test_many_processes_lease_each_job_exactly_once(tmp_path: Path, workers: int,
                                                    jobs: int) -> None:
    spool = Spool(tmp_path / "spool", tmp_path / "run")
    ids = {spool.create(request(cache=False)).id for _ in range(jobs)}
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    start = context.Event()
    processes = [
        context.Process(target=_lease_all, args=(str(spool.spool_dir), str(spool.run_dir),
                                                 f"w{i}", results, start))
        for i in range(workers)
    ]
    for process in processes:
        process.start()
    start.set()
    won = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=10)
    everything = [i for batch in won for i in batch]
    assert len(everything) == len(set(everything)) == jobs
    assert set(everything) == ids
    assert all(spool.get(i).status is SubmissionStatus.done for i in ids)
    assert all(spool.get(i).attempts == 1 for i in ids)


def _create_forever(spool_dir: str, run_dir: str) -> None:
    spool = Spool(Path(spool_dir), Path(run_dir))
    while True:
        spool.create(request(files={"big.txt": "x" * 200_000}))


def test_killed_writer_leaves_no_torn_record(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", tmp_path / "run")
    context = multiprocessing.get_context("fork")
    for delay in (0.05, 0.11, 0.17, 0.23):
        writer = context.Process(target=_create_forever,
                                 args=(str(spool.spool_dir), str(spool.run_dir)))
        writer.start()
        time.sleep(delay)
        writer.kill()
        writer.join()
    records = [name for name in os.listdir(spool.spool_dir / "submissions")
               if not name.startswith(".")]
    assert records, "the writer created nothing before it was killed"
    for name in records:
        spool.get(name.removesuffix(".json"))  # parses whole, or this raises
    spool.expire_leases(now=time.time() + ORPHAN_GRACE_S + 1)
    queued = set(spool.queued(Queue.dependencies))
    assert queued == {name.removesuffix(".json") for name in records}


# -- a model of the state machine, driven by hypothesis --------------------------

actions = st.lists(
    st.tuples(
        st.sampled_from(["create", "lease", "report_ok", "complete", "cancel", "expire",
                         "release"]),
        st.integers(min_value=0, max_value=50)),
    max_size=40)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=actions)
def test_every_submission_is_in_exactly_one_place(tmp_path_factory: pytest.TempPathFactory,
                                                   steps: list[tuple[str, int]]) -> None:
    base = tmp_path_factory.mktemp("model")
    spool = Spool(base / "spool", base / "run", lease_s=30, max_attempts=2)
    leases = []
    created = []
    clock = time.time()
    for step, pick in steps:
        if step == "create":
            created.append(spool.create(request(cache=len(created) % 2 == 0)).id)
        elif step == "lease":
            for queue in Queue:
                lease = spool.lease(queue, "w")
                if lease:
                    leases.append(lease)
        elif step in ("report_ok", "complete", "release") and leases:
            lease = leases.pop(0)
            try:
                if step == "report_ok":
                    spool.report_stage(lease, "dependencies" if lease.queue is Queue.dependencies
                                       else "run", StageResult(status="ok"))
                    leases.append(lease)
                elif step == "complete":
                    spool.complete(lease)
                else:
                    spool.release(lease, "gave up")
            except LeaseLost:
                pass
        elif step == "cancel" and created:
            with contextlib.suppress(Conflict):
                spool.cancel(created[pick % len(created)])
        elif step == "expire":
            clock += 31
            spool.expire_leases(now=clock)
    for submission_id in created:
        status = spool.get(submission_id).status
        places = [q for q in Queue if submission_id in spool.queued(q)]
        places += [q for q in Queue if submission_id in spool.leased(q)]
        if status.ended:
            # A cancelled job stays leased until its holder learns it at renewal.
            assert places in ([], [Queue.dependencies], [Queue.run]), places
            assert not any(submission_id in spool.queued(q) for q in Queue)
            if places:
                assert status is SubmissionStatus.cancelled
                assert spool.lease_of(submission_id) is not None
        else:
            assert len(places) == 1, (submission_id, status, places)


def test_waiting_dependencies_jobs_fall_back_to_the_workers(spool: Spool) -> None:
    waiting = spool.create(request())
    building = spool.create(request())
    assert spool.queued(Queue.dependencies) == [waiting.id, building.id]
    assert spool.fall_back_to_workers(60) == []
    spool.lease(Queue.dependencies, "builder")  # takes the oldest: waiting
    assert spool.fall_back_to_workers(60, now=time.time() + 61) == [building.id]
    assert spool.queued(Queue.run) == [building.id]
    assert spool.queued(Queue.dependencies) == []
    assert spool.leased(Queue.dependencies) == [waiting.id]
    assert spool.get(building.id).status is SubmissionStatus.queued


def test_a_stage_that_errs_ends_the_submission_as_error(spool: Spool) -> None:
    spool.create(request())
    lease = spool.lease(Queue.dependencies, "builder")
    spool.report_stage(lease, "dependencies", StageResult(status="error", stderr="no jail"))
    assert spool.complete(lease).status is SubmissionStatus.error


def test_a_dependencies_job_reports_only_its_own_stage(spool: Spool) -> None:
    submission = spool.create(request())
    lease = spool.lease(Queue.dependencies, "builder")
    with pytest.raises(InvalidInput, match="dependencies stage only"):
        spool.report_stage(lease, "run", StageResult(status="ok"))
    assert spool.get(submission.id).stages.run is None


# -- one lifecycle ---------------------------------------------------------------


def test_limits_are_resolved_once_when_accepted(tmp_path: Path) -> None:
    settings = Settings(spool_dir=tmp_path / "spool", run_dir=tmp_path / "run")
    spool = Spool.from_settings(settings)
    asked = spool.create(request(cache=False, limits={"run": {"memory_mib": 100}}))
    assert asked.limits.run.memory_mib == 100
    assert asked.limits.run.wall_time_s == settings.limits_default.run.wall_time_s
    # The operator changes the defaults while it waits: it keeps what it was given.
    changed = settings.model_copy(deep=True)
    changed.limits_default.run.wall_time_s = 1
    later = Spool.from_settings(changed)
    lease = later.lease(Queue.run, "w")
    assert lease is not None
    assert later.get(asked.id).limits == asked.limits
    assert later.create(request()).limits.run.wall_time_s == 1


def test_a_run_lease_completed_without_a_stage_ends_error_with_the_reason(
        spool: Spool) -> None:
    submission = spool.create(request(cache=False))
    lease = spool.lease(Queue.run, "w")
    assert lease is not None
    ended = spool.complete(lease)
    assert ended.status is SubmissionStatus.error
    assert ended.error == "the worker completed its job without reporting a stage"
    assert spool.get(submission.id) == ended
    assert spool.leased(Queue.run) == [] and spool.lease_of(submission.id) is None


def test_a_dependencies_lease_completed_without_its_stage_ends_error(spool: Spool) -> None:
    spool.create(request())
    lease = spool.lease(Queue.dependencies, "b")
    assert lease is not None
    ended = spool.complete(lease)
    assert ended.status is SubmissionStatus.error
    assert ended.error is not None and "without reporting the dependencies stage" in ended.error
    assert spool.queued(Queue.run) == []


def test_a_stage_error_ends_error_with_a_reason_not_null(spool: Spool) -> None:
    spool.create(request(cache=False))
    lease = spool.lease(Queue.run, "w")
    assert lease is not None
    spool.report_stage(lease, "compile", StageResult(status="error", stderr="nsjail broke\n"))
    ended = spool.complete(lease)
    assert ended.status is SubmissionStatus.error
    assert ended.error == "the compile stage failed: nsjail broke"


def test_attempts_count_the_tries_of_the_job_running_now(spool: Spool) -> None:
    # max_attempts is 2: a lost dependencies lease must not use up the run job's tries.
    submission = spool.create(request())
    spool.lease(Queue.dependencies, "b1")
    assert spool.expire_leases(now=time.time() + 31) == [submission.id]
    lease = spool.lease(Queue.dependencies, "b2")
    assert lease is not None and spool.get(submission.id).attempts == 2
    spool.report_stage(lease, "dependencies", StageResult(status="ok"))
    assert spool.complete(lease).attempts == 0  # the run job has not been tried yet
    spool.lease(Queue.run, "w1")
    assert spool.expire_leases(now=time.time() + 31) == [submission.id]
    again = spool.get(submission.id)
    assert again.status is SubmissionStatus.queued and again.attempts == 1
    lease = spool.lease(Queue.run, "w2")
    assert lease is not None
    spool.report_stage(lease, "run", StageResult(status="ok"))
    ended = spool.complete(lease)
    assert ended.status is SubmissionStatus.done and ended.attempts == 2


def test_a_released_lease_goes_back_only_while_its_holder_has_it(spool: Spool) -> None:
    submission = spool.create(request(cache=False))
    first = spool.lease(Queue.run, "w1")
    assert first is not None
    assert spool.expire_leases(now=time.time() + 31) == [submission.id]
    second = spool.lease(Queue.run, "w2")
    assert second is not None
    with pytest.raises(LeaseLost):
        spool.release(first, "the first holder is late")
    assert spool.get(submission.id).status is SubmissionStatus.running
    assert spool.lease_of(submission.id) == second


# -- bounded reads and retention -----------------------------------------------------


def test_a_status_filter_reads_only_the_indexed_records(spool: Spool) -> None:
    done = spool.create(request(cache=False))
    lease = spool.lease(Queue.run, "w")
    assert lease is not None
    spool.report_stage(lease, "run", StageResult(status="ok"))
    spool.complete(lease)
    waiting = spool.create(request(cache=False))
    # Records the filter must not read: a garbage one would fail it if it did.
    others = [spool.create(request(cache=False)).id for _ in range(3)]
    for other in others:
        (spool.spool_dir / "submissions" / f"{other}.json").write_text("not json")
    page, _ = spool.list(statuses={SubmissionStatus.done})
    assert [s.id for s in page] == [done.id]
    for other in others:
        (spool.spool_dir / "submissions" / f"{other}.json").unlink()
        os.unlink(spool.spool_dir / "queues" / "run" / other)
    page, _ = spool.list(statuses={SubmissionStatus.queued})
    assert [s.id for s in page] == [waiting.id]


def test_ended_submissions_are_deleted_after_their_age(spool: Spool) -> None:
    old = spool.create(request(cache=False))
    spool.cancel(old.id)
    running = spool.create(request(cache=False))
    assert spool.lease(Queue.run, "w") is not None
    assert spool.delete_ended(3600) == []
    assert spool.delete_ended(3600, now=time.time() + 7200) == [old.id]
    with pytest.raises(NotFound):
        spool.get(old.id)
    assert spool.get(running.id).status is SubmissionStatus.running
    assert spool.list()[0] == [spool.get(running.id)]


# -- owners --------------------------------------------------------------------------


def test_an_owner_reaches_only_its_own_and_anothers_is_not_found(spool: Spool) -> None:
    alices = spool.create(request(), owner="alice")
    bobs = spool.create(request(), owner="bob")
    nobodys = spool.create(request())
    assert spool.get(alices.id, owner="alice") == alices
    for submission_id in (bobs.id, nobodys.id, "0" * 26):
        with pytest.raises(NotFound) as refused:
            spool.get(submission_id, owner="alice")
        assert str(refused.value) == f"no submission {submission_id!r}"
        with pytest.raises(NotFound):
            spool.cancel(submission_id, owner="alice")
    assert spool.get(bobs.id).status is SubmissionStatus.queued
    assert spool.cancel(alices.id, owner="alice").status is SubmissionStatus.cancelled
    assert [s.id for s in spool.list(owner="alice")[0]] == [alices.id]
    assert [s.id for s in spool.list(owner="carol")[0]] == []
    assert [s.id for s in spool.list()[0]] == [nobodys.id, bobs.id, alices.id]


def test_the_record_decides_even_where_the_index_lies(spool: Spool) -> None:
    bobs = spool.create(request(), owner="bob")
    (spool.spool_dir / "owners" / "alice").mkdir()
    (spool.spool_dir / "owners" / "alice" / bobs.id).touch()
    with pytest.raises(NotFound):
        spool.get(bobs.id, owner="alice")
    assert spool.list(owner="alice")[0] == []


def test_listing_by_owner_reads_only_the_owners_records(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    for _ in range(30):
        spool.create(request(), owner="busy")
    mine = [spool.create(request(cache=False), owner="quiet") for _ in range(3)]
    spool.cancel(mine[0].id)
    reads: list[str] = []
    real_get = spool.get

    def counting_get(submission_id: str, **kwargs: object):
        reads.append(submission_id)
        return real_get(submission_id, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(spool, "get", counting_get)
    assert [s.id for s in spool.list(owner="quiet")[0]] == [m.id for m in mine[::-1]]
    assert sorted(reads) == sorted(m.id for m in mine)
    reads.clear()
    listed = spool.list(owner="quiet", statuses={SubmissionStatus.cancelled})[0]
    assert [s.id for s in listed] == [mine[0].id]
    assert reads == [mine[0].id]


def test_deleting_an_ended_submission_drops_it_from_its_owners_index(spool: Spool) -> None:
    old = spool.create(request(cache=False), owner="alice")
    spool.cancel(old.id)
    assert spool.delete_ended(3600, now=time.time() + 7200) == [old.id]
    assert list((spool.spool_dir / "owners" / "alice").iterdir()) == []


@pytest.mark.parametrize("owner", ["", ".", "..", "a/b", ".hidden"])
def test_an_owner_that_is_no_tenant_name_is_refused(spool: Spool, owner: str) -> None:
    with pytest.raises(ValueError, match="not a tenant name"):
        spool.create(request(), owner=owner)
    assert spool.list()[0] == []


# -- waiting -------------------------------------------------------------------------


def test_a_waiter_sleeps_until_the_record_changes(spool: Spool,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    submission = spool.create(request(cache=False))
    reads: list[float] = []
    real_get = spool.get

    def counting_get(submission_id: str):
        reads.append(time.monotonic())
        return real_get(submission_id)

    monkeypatch.setattr(spool, "get", counting_get)
    result: list = []
    waiter = threading.Thread(target=lambda: result.append(spool.wait(submission.id, 30)))
    waiter.start()
    other = spool.create(request(cache=False))  # a change elsewhere wakes nobody here
    time.sleep(0.5)  # what is tested: that nothing happens meanwhile
    assert len(reads) == 1
    ended_at = time.monotonic()
    spool.cancel(submission.id)
    waiter.join(timeout=5)
    assert not waiter.is_alive()
    assert result[0].status is SubmissionStatus.cancelled
    assert reads[-1] - ended_at < 1.0
    assert len(reads) <= 3  # the waiter's first look, the cancel's own, the waiter's next
    assert spool.get(other.id).status is SubmissionStatus.queued


def test_a_lease_wait_wakes_when_a_job_comes(spool: Spool) -> None:
    got: list = []
    waiter = threading.Thread(
        target=lambda: got.append(spool.lease(Queue.run, "w", wait_s=20)))
    waiter.start()
    time.sleep(0.2)  # the waiter is asleep on the empty queue by now
    created_at = time.monotonic()
    submission = spool.create(request(cache=False))
    waiter.join(timeout=5)
    assert got and got[0] is not None and got[0].submission_id == submission.id
    assert time.monotonic() - created_at < 1.0


# -- environments built before --------------------------------------------------

BUILT = Environment(key="a" * 64, inputs=f"/nix/store/{'b' * 32}-inputs",
                    script=f"/nix/store/{'c' * 32}-env")


def reusing_spool(base: Path, *, nixpkgs: str = "/nixpkgs", reuse_s: float = 3600) -> Spool:
    return Spool(base / "spool", base / "run", reuse_built_s=reuse_s, nixpkgs=nixpkgs)


def build_once(spool: Spool, req: SubmissionRequest) -> None:
    first = spool.create(req)
    lease = spool.lease(Queue.dependencies, "builder")
    assert lease is not None and lease.submission_id == first.id
    spool.report_stage(lease, "dependencies", StageResult(status=StageStatus.ok, cached=False))
    spool.complete(lease, environment=BUILT)


def test_a_shell_nix_built_before_goes_straight_to_the_run_queue(tmp_path: Path) -> None:
    spool = reusing_spool(tmp_path)
    build_once(spool, request())
    spool.lease(Queue.run, "worker")  # the first one's run job, out of the way

    again = spool.create(request(run_sh="echo again"))
    assert spool.queued(Queue.dependencies) == []
    assert spool.queued(Queue.run) == [again.id]
    assert again.environment == BUILT
    deps = again.stages.dependencies
    assert deps is not None and (deps.status, deps.cached) == (StageStatus.ok, True)
    assert deps.finished_at is not None
    lease = spool.lease(Queue.run, "worker")
    assert lease is not None and lease.submission_id == again.id
    spool.report_stage(lease, "run", StageResult(status=StageStatus.ok, exit_code=0))
    assert spool.complete(lease).status is SubmissionStatus.done


def test_a_built_environment_is_reused_only_for_the_same_text_nixpkgs_and_cache(
        tmp_path: Path) -> None:
    spool = reusing_spool(tmp_path)
    build_once(spool, request())
    other_text = spool.create(request(shell_nix="{ pkgs ? import <nixpkgs> {} }: pkgs.hello"))
    uncached = spool.create(request(cache=False))
    other_nixpkgs = reusing_spool(tmp_path, nixpkgs="/other-nixpkgs").create(request())
    assert other_text.environment is None and other_nixpkgs.environment is None
    assert uncached.environment is None and uncached.stages.dependencies is None
    assert set(spool.queued(Queue.dependencies)) == {other_text.id, other_nixpkgs.id}


def test_a_built_environment_is_not_reused_past_its_age_or_once_forgotten(
        tmp_path: Path) -> None:
    spool = reusing_spool(tmp_path)
    build_once(spool, request())
    (entry,) = (tmp_path / "spool" / "built").iterdir()
    os.utime(entry, (time.time() - 3601, time.time() - 3601))
    assert spool.create(request()).environment is None

    os.utime(entry)
    assert spool.create(request()).environment == BUILT
    spool.forget_built()
    assert spool.create(request()).environment is None
    assert reusing_spool(tmp_path, reuse_s=0).create(request()).environment is None


def test_a_failed_build_is_not_remembered(tmp_path: Path) -> None:
    spool = reusing_spool(tmp_path)
    spool.create(request())
    lease = spool.lease(Queue.dependencies, "builder")
    assert lease is not None
    spool.report_stage(lease, "dependencies", StageResult(status=StageStatus.nonzero_exit,
                                                          exit_code=1))
    spool.complete(lease, environment=BUILT)
    assert spool.create(request()).environment is None


def test_reuse_must_stay_below_the_root_age() -> None:
    with pytest.raises(ValueError, match="reuse_built_s"):
        Settings.model_validate({"cache_builder": {"reuse_built_s": 100},
                                 "gc": {"root_max_age_s": 100}})
    assert Settings().cache_builder.reuse_built_s < (Settings().gc.root_max_age_s or 0)
