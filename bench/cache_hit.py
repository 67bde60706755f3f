"""Cache hit: from `POST` to the run job being leased, for a `shell.nix`
built before, against the same for a cold build of that very `shell.nix`
(a fresh one each round, so Nix really builds). The moment of the lease is
the spool's own hand-off (`SpoolEvents`); the rounds alternate cold, hit.
"""

from __future__ import annotations

import time
import uuid

from bench.latency import WAIT_S, BenchError, check_hello
from bench.stack import Serve, SpoolEvents
from bench.stats import Figure, Row
from nixjail.models import SubmissionRequest

LEASED = "run job leased"


def fresh_shell_nix() -> str:
    """A shell.nix no one built before: an extra attribute is a variable of
    the shell, so its derivations (and their hashes) are new."""
    return ("{ pkgs ? import <nixpkgs> {} }: pkgs.mkShell { packages = [ pkgs.busybox ]; "
            f'NIXJAIL_BENCH_ROUND = "{uuid.uuid4().hex}"; }}')


def to_lease(stack: Serve, spool: SpoolEvents, shell_nix: str) -> tuple[float, bool | None]:
    """Seconds from POST to its run job leased, and whether the dependencies
    stage said it was cached; the submission is waited for to its end."""
    posted_at = time.time()
    submission = stack.client.submit(SubmissionRequest(shell_nix=shell_nix, run_sh="echo hi"))
    leased_at = spool.wait_for(submission.id, LEASED, WAIT_S)
    ended = check_hello(stack.client.wait(submission.id, WAIT_S))
    deps = ended.stages.dependencies
    return leased_at - posted_at, None if deps is None else deps.cached


def measure(stack: Serve, spool: SpoolEvents, rounds: int) -> list[Row]:
    cold, hit = [], []
    for _ in range(rounds):
        shell_nix = fresh_shell_nix()
        seconds, cached = to_lease(stack, spool, shell_nix)
        if cached:
            raise BenchError("a fresh shell.nix was reported cached: the cold figure "
                             "would be a hit")
        cold.append(seconds * 1000)
        seconds, cached = to_lease(stack, spool, shell_nix)
        if cached is False:
            raise BenchError("the second submission of a shell.nix was built again")
        hit.append(seconds * 1000)
    return [Row("cache hit, POST to run job leased",
                Figure.of("shell.nix built before", "ms", hit),
                Figure.of("cold build of the same shell.nix", "ms", cold),
                target="< 10 ms and <= 0.05 x cold")]
