"""One submission on a worker: container → container init's events → results.

The container is started before anything is sent to it; the job then goes to
container init on its stdin. Before each stage init pauses (`stage_ready`) so
that the runner can set the container's memory limit to that stage's limit;
every `stage_finished` is written into the submission at once.
"""

from __future__ import annotations

import fcntl
import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import docker
import docker.errors
import requests.exceptions
from pydantic import ValidationError

from nixjail import docker as nj_docker
from nixjail import nix
from nixjail.client import LeasedJob, LeaseSource
from nixjail.errors import LeaseLost, NixjailError
from nixjail.leasing import LeaseKeeper
from nixjail.models import (
    STAGES,
    CaseResult,
    ResolvedLimits,
    ResolvedStageLimits,
    StageResult,
    Submission,
)
from nixjail.runner.pool import POOL_JOB_WAIT_S, PoolKey, Prepare, WarmPool
from nixjail.settings import RunnerSettings, Settings

log = logging.getLogger(__name__)

NIXPKGS_IN_CONTAINER = "/opt/nixjail/nixpkgs"
# What container init takes, and what nsjail and the shell that sources the
# environment add during a stage beside the program itself.
INIT_MEMORY_MIB = 64
NSJAIL_MEMORY_MIB = 16
INIT_PROCESSES = 16
# Time for container init to start, write files and report, beyond the stages.
DEADLINE_SLACK_S = 30


def container_job(submission: Submission, limits: ResolvedStageLimits,
                  nixpkgs_in_container: str | None, *,
                  max_output_file_bytes: int) -> dict:
    """The job container init reads on its stdin (docs/container-init.md)."""
    request = submission.request
    # Container init takes a file as the API does: text, or content and encoding.
    files = request.model_dump(mode="json")["files"]
    if submission.environment is not None:
        # Built by the cache builders and substituted into the mounted store.
        environment = {"kind": "prebuilt", "env_script": submission.environment.script}
    else:
        environment = {"kind": "build", "shell_nix": request.shell_nix,
                       "nix_path": f"nixpkgs={nixpkgs_in_container}" if nixpkgs_in_container
                       else ""}
    job = request.model_dump(mode="json", include={
        "compile_sh", "run_sh", "stdin", "args", "stop_on_failure", "output_encoding",
        "output_files"})
    tests = None
    if request.tests is not None and submission.case_limits is not None:
        tests = [{**case.model_dump(mode="json", exclude={"limits", "checker"}),
                  "args": request.args if case.args is None else case.args,
                  "limits": case_limits.model_dump(mode="json"),
                  "checker": (case.checker or request.checker).model_dump(mode="json")}
                 for case, case_limits in zip(request.tests, submission.case_limits,
                                              strict=True)]
    return {
        **job,
        "files": files,
        "tests": tests,
        "limits": limits.model_dump(mode="json"),
        "environment": environment,
        "deadline_s": overall_deadline_s(limits, submission.case_limits),
        "handshake": True,
        "max_output_file_bytes": max_output_file_bytes,
    }


def overall_deadline_s(limits: ResolvedStageLimits,
                       case_limits: list[ResolvedLimits] | None = None) -> float:
    """Every stage at its wall time; with tests, every case and its checker at theirs."""
    stages = [stage for stage in STAGES if not (stage == "run" and case_limits is not None)]
    cases = sum(2 * case.wall_time_s for case in case_limits or [])
    return sum(getattr(limits, stage).wall_time_s for stage in stages) + cases \
        + DEADLINE_SLACK_S


def run_submission(source: LeaseSource, docker_client: docker.DockerClient,
                   settings: Settings, runner_name: str, leased: LeasedJob, *,
                   stopping: threading.Event | None = None,
                   host_failed: Callable[[str], None] | None = None,
                   pool: WarmPool | None = None) -> None:
    """Run one leased submission to its end and complete its lease.

    When `stopping` is set the runner removes its containers (see
    `Runner.stop`); the lease is then given back, not completed, so the
    submission runs again once a runner is back. When dockerd fails (not
    the submission), the job goes back without using up an attempt and
    `host_failed` hears why. With a `pool`, a warm container of the
    submission's environment is taken when there is one.
    """
    lease, submission, limits = leased
    stopping = stopping or threading.Event()
    error: str | None = None  # ends the submission as error
    retry: str | None = None  # give the job back
    tried = True  # whether that try counts as an attempt
    container = None
    roots: list[Path] = []

    removal = threading.Lock()

    def stop_container() -> None:
        # Once: the lease keeper (on a cancel) and the end of the run both ask.
        if container is not None and removal.acquire(blocking=False):
            nj_docker.remove(container)

    keeper = LeaseKeeper(source, lease, settings.lease_s / 3, on_lost=stop_container)
    keeper.start()
    try:
        name = f"nixjail-{submission.id}-{submission.attempts}"
        needed = container_needs(settings.runner, limits)
        key = pool_key(submission)
        warm = pool.take(key, lambda spec: spec.pids >= needed.pids) \
            if pool is not None else None
        if warm is not None:
            container, channel, roots = warm.container, warm.channel, warm.roots
            spec = replace(warm.spec, name=name, memory_mib=needed.memory_mib)
            # Found by its name from now on (labels cannot change).
            nj_docker.rename(docker_client, container, spec)
        else:
            if key is not None:
                roots = _substitute(settings.runner, submission.id, key)
            mounts = environment_mounts(settings.runner, key)
            spec = replace(needed, name=name, read_only_mounts=mounts, labels={
                **needed.labels, nj_docker.LABEL_RUNNER: runner_name,
                nj_docker.LABEL_SUBMISSION: submission.id, nj_docker.LABEL_HOLDER: lease.holder})
            container = nj_docker.create(docker_client, spec)
            channel = None
        # Created before this look: a stop that came later finds it by its label.
        if stopping.is_set():
            raise RunnerStopping("the runner stopped")
        if channel is None:
            channel = nj_docker.InitChannel(container)
            container.start()
        channel.send(container_job(
            submission, limits, NIXPKGS_IN_CONTAINER if settings.runner.nixpkgs else None,
            max_output_file_bytes=settings.judging.max_output_file_bytes))
        error = _follow(channel, source, keeper, limits, spec,
                        memory_mib=warm.spec.memory_mib if warm is not None else spec.memory_mib)
        if error is None and not keeper.lost.is_set():
            status = container.wait(timeout=30)
            if status.get("StatusCode", 0) != 0:
                error = f"container init exited with code {status['StatusCode']}"
    except LeaseLost:
        keeper.lost.set()
    except ContainerGone as exc:
        retry = str(exc)
    except RunnerStopping as exc:
        retry, tried = str(exc), False
    except NixjailError as exc:
        error = str(exc)
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        retry, tried = f"docker failed: {exc}", False
        if host_failed is not None:
            host_failed(retry)
    finally:
        keeper.stop()
    try:
        _settle(source, keeper, submission.id, stopping, retry, tried, error)
    finally:
        # After the submission's end is recorded: its answer waits for no removal.
        try:
            stop_container()
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            log.warning("removing the container of %s: %s", submission.id, exc)
        finally:
            for root in roots:
                nix.remove_gc_root(root)


def _settle(source: LeaseSource, keeper: LeaseKeeper, submission_id: str,
            stopping: threading.Event, retry: str | None, tried: bool,
            error: str | None) -> None:
    """Complete the lease, or give the job back."""
    if keeper.lost.is_set():
        return  # cancelled, or requeued for another worker: nothing more to say
    if stopping.is_set() and (retry or error):
        # The stop most likely cut it short: not the submission's doing.
        retry, tried = "the runner stopped while running it", False
    try:
        if retry is not None:
            log.warning("giving %s back: %s", submission_id, retry)
            source.release(keeper.lease, retry, tried=tried)
        else:
            source.complete(keeper.lease, error=error)
    except LeaseLost as exc:
        log.info("completing: %s", exc)


def pool_key(submission: Submission) -> PoolKey:
    """The environment a container for `submission` is made for."""
    environment = submission.environment
    return None if environment is None else (environment.inputs, environment.script)


def pool_preparer(settings: Settings, runner_name: str, holder: str) -> Prepare:
    """How the warm pool makes a container for an environment: its closure
    substituted and rooted, mounted as for a submission, the default limits."""
    config = settings.runner

    def prepare(key: PoolKey, name: str) -> tuple[nj_docker.ContainerSpec, list[Path]]:
        roots = [] if key is None else _substitute(config, name, key)
        try:
            needed = container_needs(config, settings.limits_default)
            spec = replace(needed, name=name, job_wait_s=POOL_JOB_WAIT_S,
                           read_only_mounts=environment_mounts(config, key),
                           labels={nj_docker.LABEL_RUNNER: runner_name,
                                   nj_docker.LABEL_HOLDER: holder})
        except BaseException:
            for root in roots:
                nix.remove_gc_root(root)
            raise
        return spec, roots

    return prepare


class RunnerStopping(Exception):
    """The runner is stopping: the job goes back to the queue."""


class ContainerGone(Exception):
    """The container ended before container init said it finished, and not
    by its own word (dockerd restarted, the container was removed): the
    job goes back to the queue, and counts as an attempt."""


def _substitute(config: RunnerSettings, owner: str, key: tuple[str, str]) -> list[Path]:
    """Make an environment (its inputs and script paths) valid in this
    worker's store, from the cache builders only, and hold it with GC roots
    (named for `owner`: a submission, a pool container) while it is in use."""
    paths = list(key)
    config.gc_roots_dir.mkdir(parents=True, exist_ok=True)
    # Two copies of one path into a store that no daemon guards (a chroot
    # store) corrupt each other: substitute one at a time.
    with open(config.gc_roots_dir / ".substitute.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        nix.realise_from_cache(paths, store=config.store, caches=config.caches,
                               public_keys=config.trusted_public_keys,
                               timeout_s=config.substitute_timeout_s)
    roots = []
    for name, path in zip(("inputs", "script"), paths, strict=True):
        root = config.gc_roots_dir / f"{owner}-{name}"
        nix.add_gc_root(config.store, path, root)
        roots.append(root)
    return roots


def environment_mounts(config: RunnerSettings, key: PoolKey) -> dict[Path, str]:
    """What a container for `environment` mounts read-only: nixpkgs, and the
    environment's closure, path by path, as the container's whole /nix/store.

    Not the host's store: that holds every other submission's environment
    (and whatever secrets their shell.nix put into it).
    """
    mounts = {}
    if config.nixpkgs is not None:
        mounts[config.nixpkgs] = NIXPKGS_IN_CONTAINER
    if key is None:
        return mounts
    store_dir = nix.store_dir(config.store)
    closure = nix.closure_registration_times(config.store, list(key))
    mounts.update({store_dir / Path(path).name: f"/nix/store/{Path(path).name}"
                   for path in sorted(closure)})
    return mounts


def container_needs(config: RunnerSettings, limits: ResolvedStageLimits
                    ) -> nj_docker.ContainerSpec:
    """The container that submissions of these limits need, but for its
    name, labels and mounts."""
    stage_limits: list[ResolvedLimits] = [getattr(limits, stage) for stage in STAGES]
    spec = nj_docker.ContainerSpec(
        image=config.image,
        name="",
        labels={},
        memory_mib=0,
        pids=max(s.processes for s in stage_limits) + INIT_PROCESSES,
        cpus=config.cpus,
        work_dir_mib=config.work_dir_mib,
        work_dir_inodes=config.work_dir_inodes,
        store_mib=config.store_mib,
        store_inodes=config.store_inodes,
    )
    return replace(spec, memory_mib=created_memory_mib(spec, limits))


def created_memory_mib(spec: nj_docker.ContainerSpec, limits: ResolvedStageLimits) -> int:
    """The container's memory limit when created: the largest stage, container
    init and nsjail, and every tmpfs full to its size and file count. So what
    the files hold can never leave init without room; only a stage's own
    processes can reach the limit, and the kernel kills those first."""
    largest = max(getattr(limits, stage).memory_mib for stage in STAGES)
    return largest + NSJAIL_MEMORY_MIB + INIT_MEMORY_MIB + nj_docker.tmpfs_mib(spec)


def stage_memory_mib(spec: nj_docker.ContainerSpec, limits: ResolvedStageLimits, stage: str,
                     in_use_kib: object) -> int:
    """The container's limit for one stage: the stage's own memory on top of
    what the container holds before it (container init's figure, never taken
    above the created limit) and room for the work dir to fill up during it.

    The dependencies stage of a submission that builds its environment may also
    fill the private store, and a missing figure is read as the worst case: both
    get the created limit.
    """
    created = spec.memory_mib
    if stage == "dependencies" or not isinstance(in_use_kib, int) or in_use_kib < 0:
        return created
    held_mib = min(-(-in_use_kib // 1024), created)
    growth_mib = (spec.work_dir_mib + nj_docker.CONTAINER_TMP_MIB
                  + -(-(spec.work_dir_inodes + nj_docker.CONTAINER_TMP_INODES)
                      * nj_docker.INODE_KIB // 1024))
    own_mib = getattr(limits, stage).memory_mib + NSJAIL_MEMORY_MIB
    return min(created, held_mib + growth_mib + own_mib)


def _follow(channel: nj_docker.InitChannel, source: LeaseSource, keeper: LeaseKeeper,
            limits: ResolvedStageLimits, spec: nj_docker.ContainerSpec, *,
            memory_mib: int) -> str | None:
    """Act on container init's events until it finishes; the error, if it
    failed. `memory_mib` is the container's memory limit now."""
    reported = set()
    for event in channel.events():
        kind = event.get("event")
        if kind == "stage_ready":
            stage = event.get("stage")
            if stage not in STAGES:
                return f"container init asked to start an unknown stage {stage!r}"
            wanted = stage_memory_mib(spec, limits, stage, event.get("memory_in_use_kib"))
            if wanted != memory_mib:  # an update costs milliseconds on the path
                nj_docker.set_memory(channel.container, wanted)
                memory_mib = wanted
            channel.send({"go": True})
        elif kind == "stage_finished":
            try:
                result = StageResult.model_validate(event["result"])
            except (ValidationError, KeyError) as exc:
                return f"container init reported a malformed stage result: {exc}"
            source.report_stage(keeper.lease, event["stage"], result)
            reported.add(event["stage"])
        elif kind == "case_finished":
            try:
                case = CaseResult.model_validate(event["result"])
                index = int(event["index"])
            except (ValidationError, KeyError, TypeError, ValueError) as exc:
                return f"container init reported a malformed case result: {exc}"
            source.report_case(keeper.lease, index, case)
            reported.add("run")
        elif kind == "init_failed":
            return f"container init failed: {event.get('error', 'no reason given')}"
        elif kind == "finished":
            return None
    if keeper.lost.is_set():
        return None
    missing = [stage for stage in STAGES if stage not in reported]
    raise ContainerGone("container init stopped before it finished"
                        + (f" (no result for {', '.join(missing)})" if missing else ""))

