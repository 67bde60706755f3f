"""Spool scale: one job's round trip (create, lease, report, complete) and a
status-filtered list page, with a small and a large number of submissions
stored (two spools in temporary dirs, built with the spool's own API,
measured in alternation); and the API's resident memory over each.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.stack import NIXJAIL, free_port, rss_kib
from bench.stats import Figure, Row
from nixjail.client import Client
from nixjail.models import StageResult, StageStatus, SubmissionRequest, SubmissionStatus
from nixjail.settings import SETTINGS_ENV
from nixjail.spool import Queue, Spool

REQUEST = SubmissionRequest(shell_nix="{ pkgs ? import <nixpkgs> {} }: pkgs.mkShell {}",
                            run_sh="echo hi")
RESULT = StageResult(status=StageStatus.ok, exit_code=0, stdout="hi\n", wall_time_ms=2)
# One in this many stored submissions is cancelled rather than run, so a
# status filter has something to leave out.
CANCEL_EVERY = 10
BUILD_THREADS = 4
PAGE = 50
READY_TIMEOUT_S = 120


def round_trip(spool: Spool) -> None:
    """What one submission costs the spool: queued, leased, its result, ended."""
    spool.create(REQUEST)
    lease = spool.lease(Queue.run, "bench", wait_s=5)
    if lease is None:
        raise RuntimeError("a job just queued could not be leased")
    spool.report_stage(lease, "run", RESULT)
    spool.complete(lease)


def list_page(spool: Spool) -> None:
    page, _ = spool.list(statuses={SubmissionStatus.done}, limit=PAGE)
    if len(page) != PAGE:
        raise RuntimeError(f"a filtered page held {len(page)} submissions, not {PAGE}")


def fill(spool: Spool, count: int) -> None:
    # Those to be cancelled wait in the dependencies queue, which no filler
    # leases, so no round trip takes one of them.
    waiting = Spool(spool.spool_dir, spool.run_dir, dependency_jobs=True)

    def one(index: int) -> None:
        if index % CANCEL_EVERY:
            round_trip(spool)
        else:
            waiting.cancel(waiting.create(REQUEST).id)

    with ThreadPoolExecutor(BUILD_THREADS) as pool:
        for _ in pool.map(one, range(count)):
            pass


@contextlib.contextmanager
def stored(count: int) -> Iterator[Spool]:
    base = Path(tempfile.mkdtemp(prefix=f"nixjail-bench-spool-{count}-"))
    try:
        spool = Spool(base / "spool", base / "run", dependency_jobs=False)
        fill(spool, count)
        yield spool
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _timed_ms(operation: object, spool: Spool) -> float:
    started = time.perf_counter()
    operation(spool)  # type: ignore[operator]
    return (time.perf_counter() - started) * 1000


@contextlib.contextmanager
def api_over(spool: Spool) -> Iterator[tuple[Client, int]]:
    """`nixjail api` over `spool`, ready when it says so over sd_notify (as
    under systemd): its client and pid."""
    notify_path = spool.run_dir / "bench-notify.sock"
    address = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "NOTIFY_SOCKET": str(notify_path)}
    env.pop(SETTINGS_ENV, None)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        notify.settimeout(READY_TIMEOUT_S)
        process = subprocess.Popen(
            [*NIXJAIL, "api", "--spool", str(spool.spool_dir), "--run-dir", str(spool.run_dir),
             "--listen", address], env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while b"READY=1" not in notify.recv(4096).split(b"\n"):
                pass
            yield Client(f"http://{address}"), process.pid
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)


def api_rss_mib(spool: Spool) -> float:
    """The API's RSS after answering what a busy listing asks: a filtered
    page, the next one, and one submission."""
    with api_over(spool) as (client, pid):
        first = client.list(statuses={SubmissionStatus.done}, limit=PAGE)
        client.list(statuses={SubmissionStatus.done}, limit=PAGE, cursor=first.next_cursor)
        client.get(first.items[0].id)
        return rss_kib(pid) / 1024


def measure(small: int, large: int, rounds: int) -> list[Row]:
    samples: dict[str, dict[int, list[float]]] = {"trip": {small: [], large: []},
                                                  "page": {small: [], large: []}}
    with stored(small) as few, stored(large) as many:
        spools = [(small, few), (large, many)]
        for i in range(rounds):
            for count, spool in spools if i % 2 else reversed(spools):
                samples["trip"][count].append(_timed_ms(round_trip, spool))
                samples["page"][count].append(_timed_ms(list_page, spool))
        rss = {count: api_rss_mib(spool) for count, spool in spools}
    return [
        Row(f"spool, create + lease + report + complete, {large:,} vs {small:,} stored",
            Figure.of(f"{large:,} stored", "ms", samples["trip"][large]),
            Figure.of(f"{small:,} stored", "ms", samples["trip"][small]),
            target="<= 1.5 x"),
        Row(f"spool, list page of {PAGE} filtered by status, {large:,} vs {small:,} stored",
            Figure.of(f"{large:,} stored", "ms", samples["page"][large]),
            Figure.of(f"{small:,} stored", "ms", samples["page"][small]),
            target="<= 1.5 x"),
        Row(f"memory, API RSS with {large:,} stored",
            Figure.one(f"nixjail api, {large:,} stored", "MiB", rss[large]),
            Figure.one(f"nixjail api, {small:,} stored", "MiB", rss[small]),
            note="after two filtered pages and one GET"),
    ]
