"""Throughput: submissions at the runner's default concurrency against bare
`docker run --rm --network none IMAGE true` at the concurrency where that
loop is fastest (searched from 1 to 4); and, while the submissions run, the
runner's resident memory per submission in flight.
"""

from __future__ import annotations

import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker

from bench.latency import WAIT_S, check_hello, floor_once, hello
from bench.stack import Serve, rss_kib
from bench.stats import Figure, Row

BARE_CONCURRENCIES = (1, 2, 3, 4)
SAMPLE_EVERY_S = 0.05


def bare_rate(image: str, count: int, concurrency: int) -> float:
    """Containers per second of `count` bare runs, `concurrency` at once."""
    local = threading.local()

    def one(_: int) -> float:
        if not hasattr(local, "client"):
            local.client = docker.from_env()
        return floor_once(local.client, image)

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(min(concurrency, count))))  # each thread's client, warm
        started = time.perf_counter()
        list(pool.map(one, range(count)))
        return count / (time.perf_counter() - started)


class RssSampler(threading.Thread):
    """The runner's RSS and its submissions in flight (entries under the
    spool's leased/run), sampled while a batch runs."""

    def __init__(self, pid: int, leased_run: Path) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pid, self.leased_run = pid, leased_run
        self.samples: list[tuple[int, int]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(SAMPLE_EVERY_S):
            in_flight = sum(1 for name in self.leased_run.iterdir()
                            if not name.name.startswith("."))
            self.samples.append((in_flight, rss_kib(self.pid)))


def nixjail_rate(stack: Serve, count: int) -> float:
    """Submissions per second: `count` posted at once (no wait), from the
    first POST to the last one's end."""
    request = hello()
    started = time.time()
    ids = [stack.client.submit(request).id for _ in range(count)]
    ended = [check_hello(stack.client.wait(i, WAIT_S * 5)) for i in ids]
    last = max(s.finished_at.timestamp() for s in ended if s.finished_at is not None)
    return count / (last - started)


def measure(stack: Serve, image: str, count: int, probe: int, concurrency: int,
            blocks: int = 2) -> list[Row]:
    rates = {c: bare_rate(image, probe, c) for c in BARE_CONCURRENCIES}
    best = max(rates, key=lambda c: rates[c])
    runner = stack.part_pid("runner")
    idle = [rss_kib(runner) for _ in range(5)]
    sampler = RssSampler(runner, stack.state_dir / "leased" / "run")
    ours, bare = [], []
    per_block = max(1, count // blocks)
    sampler.start()
    for _ in range(blocks):  # alternating, so a change of load hits both
        ours.append(nixjail_rate(stack, per_block))
        bare.append(bare_rate(image, per_block, best))
    sampler.stopping.set()
    sampler.join()
    search = ", ".join(f"{c}: {r:.2f}/s" for c, r in rates.items())
    rows = [Row(f"throughput, {per_block * blocks} submissions",
                Figure.of(f"submissions/s at runner concurrency {concurrency}", "/s", ours,
                          p95=False),
                Figure.of(f"bare docker run true/s, {best} at once", "/s", bare, p95=False),
                target=">= 0.9 x bare",
                note=f"{blocks} alternating blocks; bare search over {probe} runs: {search}")]
    idle_kib = statistics.median(idle)
    busy = [(rss - idle_kib) / n for n, rss in sampler.samples if n > 0]
    full = [rss for n, rss in sampler.samples if n >= concurrency]
    rows.append(Row(
        "memory, runner RSS per submission in flight",
        Figure.of("(RSS - idle RSS) / in flight", "MiB", [kib / 1024 for kib in busy])
        if busy else None,
        Figure.of("runner RSS idle", "MiB", [kib / 1024 for kib in idle]),
        note=(f"peak RSS with {concurrency} in flight: {max(full) / 1024:.1f} MiB" if full
              else "no sample saw a submission in flight")))
    return rows
