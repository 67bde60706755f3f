"""API: requests per second of `GET /v1/submissions/{id}` (an ended
submission) against a bare falcon-on-waitress endpoint returning a constant
(`bench.bare_api`), by the same client, in alternating rounds.
"""

from __future__ import annotations

import contextlib
import http.client
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from bench.stack import free_port
from bench.stats import Figure, Row

CLIENT_THREADS = 4
ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def bare_endpoint(threads: int) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.bare_api", "--port", str(port), "--threads", str(threads)],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        if process.stdout.readline() != b"listening\n":
            raise RuntimeError(f"bench.bare_api did not start (exit {process.wait()})")
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(30)


def rate(address: str, path: str, seconds: float) -> float:
    """Requests/s that CLIENT_THREADS keep-alive connections get for `seconds`."""
    host, port = address.rsplit(":", 1)
    counts = [0] * CLIENT_THREADS
    failures: list[str] = []
    start = threading.Barrier(CLIENT_THREADS + 1)

    def client(index: int) -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        start.wait()
        deadline = time.perf_counter() + seconds
        try:
            while time.perf_counter() < deadline:
                connection.request("GET", path)
                answer = connection.getresponse()
                answer.read()
                if answer.status != 200:
                    failures.append(f"{path} answered {answer.status}")
                    return
                counts[index] += 1
        finally:
            connection.close()

    workers = [threading.Thread(target=client, args=(i,)) for i in range(CLIENT_THREADS)]
    for worker in workers:
        worker.start()
    start.wait()
    began = time.perf_counter()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - began
    if failures:
        raise RuntimeError(failures[0])
    return sum(counts) / elapsed


def measure(api_url: str, submission_id: str, threads: int, rounds: int,
            seconds: float) -> list[Row]:
    ours, bare = [], []
    api = api_url.removeprefix("http://")
    path = f"/v1/submissions/{submission_id}"
    with bare_endpoint(threads) as baseline:
        for i in range(rounds):
            order = [(ours, api), (bare, baseline)]
            for samples, address in order if i % 2 else reversed(order):
                samples.append(rate(address, path, seconds))
    return [Row("API, GET /v1/submissions/{id}",
                Figure.of(f"nixjail API, {CLIENT_THREADS} keep-alive clients", "req/s", ours),
                Figure.of("bare falcon on waitress, a constant", "req/s", bare),
                target=">= 0.9 x bare", note=f"{rounds} alternating rounds of {seconds:g} s")]
