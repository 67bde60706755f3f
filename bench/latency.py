"""End-to-end latency of a submission against the floor a fresh container costs.

Run through an all-in-one nixjail:

    scripts/all-in-one .venv/bin/python bench/latency.py [--runs N]

Baseline: `docker run --rm --network none` of the runner image running `true`
(create, start with attach, wait, remove), the least any service that starts
a fresh container per submission pays. nixjail: `POST /v1/submissions?wait`
of examples/hello until it ends, with its environment already cached, so the
figure is what a submitter waits for a judged run: container, two jailed
stages, the results.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import docker

from nixjail.client import Client
from nixjail.models import SubmissionRequest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "hello"


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def container_floor(image: str, runs: int) -> list[float]:
    client = docker.from_env()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        client.containers.run(image, ["true"], entrypoint=[], network_mode="none",
                              remove=True)
        samples.append(time.perf_counter() - started)
    return samples


def hello_request() -> SubmissionRequest:
    files = {path.name: path.read_text() for path in EXAMPLE.iterdir()
             if path.name not in ("shell.nix", "compile.sh", "run.sh", "README.md")}
    return SubmissionRequest(
        shell_nix=(EXAMPLE / "shell.nix").read_text(),
        compile_sh=(EXAMPLE / "compile.sh").read_text(),
        run_sh=(EXAMPLE / "run.sh").read_text(),
        stdin=(EXAMPLE / "stdin.txt").read_text(), files=files)


def submission_latency(client: Client, runs: int) -> tuple[list[float], list[dict]]:
    request = hello_request()
    client.submit(request, wait_s=60)  # builds and caches the environment once
    samples, stages = [], []
    for _ in range(runs):
        started = time.perf_counter()
        submission = client.submit(request, wait_s=60)
        samples.append(time.perf_counter() - started)
        assert submission.status == "done", submission
        stages.append({name: getattr(submission.stages, name).wall_time_ms
                       for name in ("dependencies", "compile", "run")})
    return samples, stages


def row(name: str, samples: list[float]) -> str:
    return (f"| {name} | {statistics.median(samples) * 1000:.0f} | "
            f"{percentile(samples, 0.95) * 1000:.0f} | {len(samples)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--image", default="nixjail-runner:latest")
    args = parser.parse_args()
    client = Client(os.environ.get("NIXJAIL_API", "http://127.0.0.1:8460"))
    floor = container_floor(args.image, args.runs)
    latency, stages = submission_latency(client, args.runs)
    print("| what | median ms | p95 ms | runs |\n| --- | --- | --- | --- |")
    print(row("docker run --rm IMAGE true (floor)", floor))
    print(row("nixjail: hello, cached environment, compile + run", latency))
    for stage in ("compile", "run"):
        print(f"| stage {stage} wall (median) | "
              f"{statistics.median(s[stage] for s in stages):.0f} | | |")


if __name__ == "__main__":
    main()
