"""The cache builder end to end through the spool: real nix-daemon, real nsjail."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

from cb_helpers import request, salt, shell

from nixjail.cache_builder.service import CacheBuilder
from nixjail.models import StageStatus, Submission, SubmissionStatus
from nixjail.nix import valid_paths
from nixjail.spool import Queue, Spool


def one_job(builder: CacheBuilder) -> Submission | None:
    leased = builder.source.lease(Queue.dependencies, builder.holder)
    assert leased is not None, "no dependencies job was queued"
    return builder.process(leased)


def counted(counter: Path, tag: str) -> str:
    return shell(packages=f'(pkgs.counted {{ counterFile = "{counter}"; salt = "{tag}"; }})',
                 tag=tag)


def test_build_records_the_environment_then_reuses_it(builder, spool: Spool, counter: Path):
    tag = salt()
    first = spool.create(request(counted(counter, tag)))
    one_job(builder)
    done = spool.get(first.id)
    deps = done.stages.dependencies
    assert deps.status is StageStatus.ok, deps.stderr
    assert deps.cached is False
    assert done.status is SubmissionStatus.queued and spool.queued(Queue.run) == [first.id]
    env = done.environment
    assert env is not None and valid_paths("auto", [env.inputs, env.script]) == {
        env.inputs, env.script}
    script = Path(env.script).read_text()
    assert tag in script and "PATH" in script
    assert len(counter.read_text().splitlines()) == 1
    roots = builder.config.roots_dir
    assert (roots / f"{env.key}-inputs").readlink() == Path(env.inputs)
    assert (roots / f"{env.key}-script").readlink() == Path(env.script)

    second = spool.create(request(counted(counter, tag)))
    one_job(builder)
    again = spool.get(second.id)
    assert again.stages.dependencies.status is StageStatus.ok
    assert again.stages.dependencies.cached is True
    assert again.environment == env
    assert len(counter.read_text().splitlines()) == 1, "the second submission rebuilt"


def test_same_derivations_in_other_words_build_nothing(builder, spool: Spool, counter: Path):
    tag = salt()
    spool.create(request(counted(counter, tag)))
    one_job(builder)
    # Another key (the text differs), the same packages: nothing to build.
    time.sleep(1.1)  # registration times have whole seconds
    other = spool.create(request("# the same, reworded\n" + counted(counter, tag)))
    one_job(builder)
    deps = spool.get(other.id).stages.dependencies
    assert deps.status is StageStatus.ok, deps.stderr
    assert deps.cached is True
    assert len(counter.read_text().splitlines()) == 1


def test_identical_submissions_at_once_are_built_once(builder, spool: Spool, counter: Path):
    tag = salt()
    ids = [spool.create(request(counted(counter, tag))).id for _ in range(2)]
    builder.serve()  # concurrency 2, exits when the queue is empty
    results = [spool.get(i) for i in ids]
    assert [r.stages.dependencies.status for r in results] == [StageStatus.ok] * 2
    assert sorted(r.stages.dependencies.cached for r in results) == [False, True]
    assert results[0].environment == results[1].environment
    assert len(counter.read_text().splitlines()) == 1


def test_evaluation_that_never_ends_is_a_time_limit(builder, spool: Spool):
    busy = ("{ ... }: let l = builtins.genList (x: x) 10000; in "
            "builtins.foldl' (a: x: builtins.foldl' (b: y: builtins.foldl' (c: z: c + 1) "
            f"b l) a l) 0 l # {salt()}\n")
    sub = spool.create(request(busy, wall_time_s=2, memory_mib=512))
    started = time.monotonic()
    one_job(builder)
    assert time.monotonic() - started < 6
    done = spool.get(sub.id)
    assert done.status is SubmissionStatus.failed
    deps = done.stages.dependencies
    assert deps.status is StageStatus.time_limit
    assert 2000 <= deps.wall_time_ms < 4000
    assert done.environment is None and spool.queued(Queue.run) == []


def test_evaluation_that_eats_memory_is_a_memory_limit(builder, spool: Spool):
    hungry = f"{{ ... }}: builtins.length (builtins.genList (x: x) 200000000) # {salt()}\n"
    sub = spool.create(request(hungry, memory_mib=128))
    one_job(builder)
    deps = spool.get(sub.id).stages.dependencies
    assert deps.status is StageStatus.memory_limit, deps
    assert deps.memory_kib >= 100 * 1024


def test_build_that_eats_memory_is_a_memory_limit(builder, spool: Spool):
    eater = shell(packages=f'(pkgs.runCommand "eater" {{ salt = "{salt()}"; }} '
                  "''dd if=/dev/zero of=/dev/null bs=400M count=1; mkdir $out'')")
    sub = spool.create(request(eater, memory_mib=128))
    one_job(builder)
    deps = spool.get(sub.id).stages.dependencies
    assert deps.status is StageStatus.memory_limit, deps
    assert "eater" in deps.stderr, deps


def test_a_failing_build_is_nonzero_exit_with_its_log(builder, spool: Spool):
    failing = shell(packages=f'(pkgs.runCommand "broken" {{ salt = "{salt()}"; }} '
                    "''echo the compiler is missing >&2; exit 3'')")
    sub = spool.create(request(failing))
    one_job(builder)
    done = spool.get(sub.id)
    deps = done.stages.dependencies
    assert deps.status is StageStatus.nonzero_exit and deps.exit_code not in (0, None)
    assert "the compiler is missing" in deps.stderr
    assert done.status is SubmissionStatus.failed


def test_a_syntax_error_is_nonzero_exit(builder, spool: Spool):
    sub = spool.create(request("{ pkgs ? import <nixpkgs> {} }: pkgs.mkShell {"))
    one_job(builder)
    deps = spool.get(sub.id).stages.dependencies
    assert deps.status is StageStatus.nonzero_exit
    assert "syntax error" in deps.stderr


def test_output_past_the_cap_is_an_output_limit(builder, spool: Spool):
    noisy = shell(packages=f'(pkgs.runCommand "noisy" {{ salt = "{salt()}"; }} '
                  "''yes nixjail | head -c 1000000 >&2; mkdir $out'')")
    sub = spool.create(request(noisy, output_kib=16))
    one_job(builder)
    deps = spool.get(sub.id).stages.dependencies
    assert deps.status is StageStatus.output_limit
    assert deps.stderr_truncated and len(deps.stderr.encode()) <= 16 * 1024


def test_a_cancelled_job_is_stopped(settings, spool: Spool):
    settings.lease_s = 1.5  # renewals every 0.5 s
    builder = CacheBuilder(settings, _source(spool, settings), spool=spool, name="cb@cancel")
    busy = ("{ ... }: let l = builtins.genList (x: x) 10000; in "
            "builtins.foldl' (a: x: builtins.foldl' (b: y: builtins.foldl' (c: z: c + 1) "
            f"b l) a l) 0 l # {salt()}\n")
    sub = spool.create(request(busy, wall_time_s=20, memory_mib=512))
    threading.Timer(0.5, spool.cancel, [sub.id]).start()
    started = time.monotonic()
    assert one_job(builder) is None
    assert time.monotonic() - started < 5
    done = spool.get(sub.id)
    assert done.status is SubmissionStatus.cancelled
    assert done.stages.dependencies.status is StageStatus.skipped


def test_a_restarted_builder_gives_back_its_predecessors_leases(builder, spool: Spool):
    sub = spool.create(request(shell()))
    gone = subprocess.Popen(["true"])  # a predecessor that has died
    gone.wait()
    assert spool.lease(Queue.dependencies, f"{builder.name}/{gone.pid}") is not None
    still_here = spool.create(request(shell()))
    assert spool.lease(Queue.dependencies, f"{builder.name}/{os.getppid()}") is not None
    builder.clean_up_after_crash()
    again = spool.get(sub.id)
    assert again.status is SubmissionStatus.queued and again.attempts == 1
    assert spool.queued(Queue.dependencies) == [sub.id]
    # A predecessor that still runs (it is stopping) keeps its own.
    assert spool.get(still_here.id).status is SubmissionStatus.building


def _source(spool: Spool, settings):
    from nixjail.client import SpoolLeaseSource

    return SpoolLeaseSource(spool, settings)
