"""The spool's guarantees: atomic records, exactly-once leasing, expiry."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nixjail.errors import Conflict, InvalidInput, LeaseLost, NotFound
from nixjail.models import StageResult, StageStatus, SubmissionRequest, SubmissionStatus
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
    assert ended.attempts == 2
    assert spool.lease_of(submission.id) is None


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
