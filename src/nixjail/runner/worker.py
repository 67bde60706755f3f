"""One submission on a worker: container → container init's events → results.

The container is started before anything is sent to it; the job then goes to
container init on its stdin. Before each stage init pauses (`stage_ready`) so
that the runner can set the container's memory limit to that stage's limit;
every `stage_finished` is written into the submission at once.
"""

from __future__ import annotations

import fcntl
import logging
from pathlib import Path

import docker
import docker.errors
from pydantic import ValidationError

from nixjail import docker as nj_docker
from nixjail import nix
from nixjail.client import LeasedJob, LeaseSource
from nixjail.errors import LeaseLost, NixjailError
from nixjail.leasing import LeaseKeeper
from nixjail.models import (
    STAGES,
    Environment,
    ResolvedLimits,
    ResolvedStageLimits,
    StageResult,
    Submission,
)
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
                  nixpkgs_in_container: str | None) -> dict:
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
    return {
        "files": files,
        "compile_sh": request.compile_sh,
        "run_sh": request.run_sh,
        "stdin": request.stdin,
        "limits": limits.model_dump(mode="json"),
        "environment": environment,
        "deadline_s": overall_deadline_s(limits),
        "handshake": True,
    }


def overall_deadline_s(limits: ResolvedStageLimits) -> float:
    return sum(getattr(limits, stage).wall_time_s for stage in STAGES) + DEADLINE_SLACK_S


def run_submission(source: LeaseSource, docker_client: docker.DockerClient,
                   settings: Settings, runner_name: str, leased: LeasedJob) -> None:
    """Run one leased submission to its end and complete its lease."""
    lease, submission, limits = leased
    config = settings.runner
    error: str | None = None
    container = None
    roots: list[Path] = []

    def stop_container() -> None:
        if container is not None:
            nj_docker.remove(container)

    keeper = LeaseKeeper(source, lease, settings.lease_s / 3, on_lost=stop_container)
    keeper.start()
    try:
        mounts = {}
        if config.nixpkgs is not None:
            mounts[config.nixpkgs] = NIXPKGS_IN_CONTAINER
        if submission.environment is not None:
            roots = _substitute(config, submission.id, submission.environment)
            mounts[nix.store_dir(config.store)] = "/nix/store"
        container = nj_docker.create(
            docker_client, _container_spec(config, runner_name, submission, limits, mounts))
        channel = nj_docker.InitChannel(container)
        container.start()
        channel.send(container_job(submission, limits,
                                   NIXPKGS_IN_CONTAINER if config.nixpkgs else None))
        error = _follow(channel, source, keeper, limits, config.work_dir_mib)
        if error is None and not keeper.lost.is_set():
            status = container.wait(timeout=30)
            if status.get("StatusCode", 0) != 0:
                error = f"container init exited with code {status['StatusCode']}"
    except LeaseLost:
        keeper.lost.set()
    except NixjailError as exc:
        error = str(exc)
    except docker.errors.DockerException as exc:
        error = f"docker failed: {exc}"
    finally:
        keeper.stop()
        if container is not None:
            nj_docker.remove(container)
        for root in roots:
            nix.remove_gc_root(root)
    if keeper.lost.is_set():
        return  # cancelled, or requeued for another worker: nothing more to say
    try:
        source.complete(keeper.lease, error=error)
    except LeaseLost as exc:
        log.info("completing: %s", exc)


def _substitute(config: RunnerSettings, submission_id: str,
                environment: Environment) -> list[Path]:
    """Make the environment valid in this worker's store, from the cache
    builders only, and hold it with GC roots while the submission runs."""
    paths = [environment.inputs, environment.script]
    config.gc_roots_dir.mkdir(parents=True, exist_ok=True)
    # Two copies of one path into a store that no daemon guards (a chroot
    # store) corrupt each other: substitute one submission at a time.
    with open(config.gc_roots_dir / ".substitute.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        nix.realise_from_cache(paths, store=config.store, caches=config.caches,
                               public_keys=config.trusted_public_keys,
                               timeout_s=config.substitute_timeout_s)
    roots = []
    for name, path in (("inputs", environment.inputs), ("script", environment.script)):
        root = config.gc_roots_dir / f"{submission_id}-{name}"
        nix.add_gc_root(config.store, path, root)
        roots.append(root)
    return roots


def _container_spec(config: RunnerSettings, runner_name: str, submission: Submission,
                    limits: ResolvedStageLimits,
                    mounts: dict[Path, str]) -> nj_docker.ContainerSpec:
    stage_limits: list[ResolvedLimits] = [getattr(limits, stage) for stage in STAGES]
    return nj_docker.ContainerSpec(
        image=config.image,
        name=f"nixjail-{submission.id}-{submission.attempts}",
        labels={nj_docker.LABEL_RUNNER: runner_name,
                nj_docker.LABEL_SUBMISSION: submission.id},
        memory_mib=max(s.memory_mib for s in stage_limits) + config.work_dir_mib
        + config.store_mib + INIT_MEMORY_MIB,
        pids=max(s.processes for s in stage_limits) + INIT_PROCESSES,
        cpus=config.cpus,
        work_dir_mib=config.work_dir_mib,
        store_mib=config.store_mib,
        read_only_mounts=mounts,
    )


def _follow(channel: nj_docker.InitChannel, source: LeaseSource, keeper: LeaseKeeper,
            limits: ResolvedStageLimits, work_dir_mib: int) -> str | None:
    """Act on container init's events until it finishes; the error, if it failed."""
    reported = set()
    for event in channel.events():
        kind = event.get("event")
        if kind == "stage_ready":
            stage_memory = getattr(limits, event["stage"]).memory_mib
            # What the container already holds (init, files in its tmpfs, a
            # private store) stays charged to it: the stage gets its own limit
            # on top. Without that figure, assume the whole work dir is full.
            in_use_kib = event.get("memory_in_use_kib")
            in_use_mib = (-(-in_use_kib // 1024) if isinstance(in_use_kib, int)
                          else work_dir_mib + INIT_MEMORY_MIB)
            nj_docker.set_memory(channel.container, stage_memory + in_use_mib + NSJAIL_MEMORY_MIB)
            channel.send({"go": True})
        elif kind == "stage_finished":
            try:
                result = StageResult.model_validate(event["result"])
            except (ValidationError, KeyError) as exc:
                return f"container init reported a malformed stage result: {exc}"
            source.report_stage(keeper.lease, event["stage"], result)
            reported.add(event["stage"])
        elif kind == "init_failed":
            return f"container init failed: {event.get('error', 'no reason given')}"
        elif kind == "finished":
            return None
    if keeper.lost.is_set():
        return None
    missing = [stage for stage in STAGES if stage not in reported]
    return ("container init stopped before it finished"
            + (f" (no result for {', '.join(missing)})" if missing else ""))

