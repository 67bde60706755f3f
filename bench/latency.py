"""Latency of a cached hello submission against the floor a fresh container
costs, and the breakdown of where the median submission's time goes.

nixjail: `POST /v1/submissions?wait` of a submission whose `run_sh` is
`echo hi` (no compile), its environment (examples/hello's shell.nix) built
before, timed until the answer arrives. Floor: `docker run --rm --network
none IMAGE true` of the runner image through the Docker SDK (create, start
with attach, wait, remove), the least a service that starts a fresh
container per submission pays. The two alternate, run by run.
"""

from __future__ import annotations

import itertools
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import docker

from bench.stack import DockerEvents, Serve, SpoolEvents
from bench.stats import Figure, Row, Segment
from nixjail.models import Submission, SubmissionRequest, SubmissionStatus

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "hello"
WAIT_S = 60


class BenchError(RuntimeError):
    """The stack did not do what the benchmark needs (a figure would be a lie)."""


def hello() -> SubmissionRequest:
    return SubmissionRequest(shell_nix=(EXAMPLE / "shell.nix").read_text(), run_sh="echo hi")


def check_hello(submission: Submission) -> Submission:
    run = submission.stages.run
    if submission.status is not SubmissionStatus.done or run is None or run.stdout != "hi\n":
        raise BenchError(f"submission {submission.id} ended {submission.status} "
                         f"({submission.error or 'no error'}), run stage {run}")
    return submission


def floor_once(client: docker.DockerClient, image: str) -> float:
    started = time.perf_counter()
    client.containers.run(image, ["true"], entrypoint=[], network_mode="none", remove=True)
    return time.perf_counter() - started


# What the stack without a warm pool runs with: the local default but for the pool.
NO_POOL_SETTINGS = "[cache_builder]\nenabled = true\n[runner]\npool_size = 0\n"


@dataclass
class Timed:
    """One submission posted with ?wait: when it was sent and answered (wall clock)."""

    submission: Submission
    posted_at: float
    answered_at: float

    @property
    def latency_s(self) -> float:
        return self.answered_at - self.posted_at


def submit_timed(stack: Serve, request: SubmissionRequest) -> Timed:
    posted_at = time.time()
    submission = stack.client.submit(request, wait_s=WAIT_S)
    return Timed(check_hello(submission), posted_at, time.time())


def measure(stack: Serve, docker_client: docker.DockerClient, image: str,
            runs: int) -> tuple[list[float], list[Timed]]:
    """`runs` floor runs and `runs` hello submissions, alternating (which goes
    first alternates too, so a drift of the machine's load hits both)."""
    request = hello()
    check_hello(stack.client.submit(request, wait_s=WAIT_S))  # builds the environment once
    floor_once(docker_client, image)  # and warms dockerd's caches of the image
    floor, timed = [], []
    for i in range(runs):
        if i % 2:
            timed.append(submit_timed(stack, request))
            floor.append(floor_once(docker_client, image))
        else:
            floor.append(floor_once(docker_client, image))
            timed.append(submit_timed(stack, request))
    return floor, timed


def rows(floor: list[float], timed: list[Timed], cold_floor: list[float],
         cold: list[Timed]) -> list[Row]:
    """`timed` on the local default (its warm pool on), `cold` on a stack
    without a pool, each beside the floor runs alternating with it."""
    def figure(name: str, values: list[Timed]) -> Figure:
        return Figure.of(name, "ms", [t.latency_s * 1000 for t in values])

    def floor_of(values: list[float]) -> Figure:
        return Figure.of("docker run --rm --network none IMAGE true", "ms",
                         [s * 1000 for s in values])

    return [Row("latency, without warm pool", figure("POST ?wait of cached echo hi, "
                "runner.pool_size 0", cold), floor_of(cold_floor), target="<= 1.3 x floor"),
            Row("latency, with warm pool", figure("POST ?wait of cached echo hi, the local "
                "default's pool of 2", timed), floor_of(floor), target="<= 0.3 x floor")]


# -- breakdown ---------------------------------------------------------------------

NOT_SPLIT = [
    "Not split yet: between `dependencies job leased` and `queued for run` the cache "
    "builder's lease, Nix evaluation in its jail and record writes (only the jailed "
    "dependencies stage's wall time is recorded).",
    "Not split yet: between `run job leased` and `container create`, the runner's "
    "substitution of the environment, its GC root and the container's spec.",
    "Not split yet: inside the container (`start` to `die`), container init's start, "
    "sourcing the environment script and the protocol around the jailed stages: only the "
    "stages' wall times and docker `update` events (the runner setting limits) divide it.",
    "Not split yet: between `ended` and the answer, the API's long-poll wake-up and the "
    "response.",
]


def timeline(timed: Timed, spool: SpoolEvents, containers: DockerEvents,
             ) -> list[tuple[float, str]]:
    submission = timed.submission
    events = [(timed.posted_at, "POST sent"),
              (submission.created_at.timestamp(), "record created (created_at)"),
              *spool.of(submission.id), *containers.of(submission.id),
              (timed.answered_at, "answer received")]
    if submission.finished_at is not None:
        events.append((submission.finished_at.timestamp(), "record ended (finished_at)"))
    return sorted(events)


def _of_which(end: str, start: str, submission: Submission) -> str:
    stages = submission.stages
    if start == "dependencies job leased" and stages.dependencies is not None:
        return f"dependencies stage {stages.dependencies.wall_time_ms} ms wall"
    if end == "container die":
        walls = [f"{name} stage {result.wall_time_ms} ms wall"
                 for name, result in (("compile", stages.compile), ("run", stages.run))
                 if result is not None and result.status != "skipped"]
        return "; ".join(walls)
    return ""


def breakdown(timed: list[Timed], spool: SpoolEvents,
              containers: DockerEvents) -> tuple[list[Segment], list[str], float]:
    """The median submission's path, event to event, with each segment's
    median over every run beside it; what happened after the answer; and
    the median submission's latency, ms (what the segments add up to)."""
    lines = {id(t): timeline(t, spool, containers) for t in timed}
    ordered = sorted(timed, key=lambda t: t.latency_s)
    median = ordered[(len(ordered) - 1) // 2]

    def pairs(events: list[tuple[float, str]]) -> dict[tuple[str, str, int], float]:
        """Event to next event, ms; the same pair seen again gets the next index."""
        answered = next(when for when, label in events if label == "answer received")
        on_path = [e for e in events if e[0] <= answered]
        found: dict[tuple[str, str, int], float] = {}
        for a, b in itertools.pairwise(on_path):
            index = sum(1 for start, end, _ in found if (start, end) == (a[1], b[1]))
            found[(a[1], b[1], index)] = (b[0] - a[0]) * 1000
        return found

    every = [pairs(lines[id(t)]) for t in timed]
    segments = []
    for key, ms in pairs(lines[id(median)]).items():
        samples = [p[key] for p in every if key in p]
        segments.append(Segment(key[0], key[1], ms, statistics.median(samples), len(samples),
                                _of_which(key[1], key[0], median.submission)))
    answered = median.answered_at
    notes = [f"After the answer (off the path): {label} {(when - answered) * 1000:+.0f} ms"
             for when, label in lines[id(median)] if when > answered]
    return segments, notes + NOT_SPLIT, median.latency_s * 1000
