"""A burst of 500 submissions on this 2-core machine: every one finishes,
none is lost or run twice."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from reliability import Figures, FinishedRuns
from serve_stack import SHELL_NIX, clean_up, stage_stdout, start_serve

pytestmark = [pytest.mark.docker, pytest.mark.nix]

BURST = 500


def test_a_burst_of_500_submissions(tmp_path: Path) -> None:
    served = start_serve(tmp_path, settings_toml="[runner]\nconcurrency = 4\n"
                                                 "[cache_builder]\nenabled = true\n")
    runs = FinishedRuns(served.runner_name)
    try:
        started = time.monotonic()

        def submit(i: int) -> tuple[str, str]:
            status, body = served.api.request(
                "POST", "/v1/submissions", {"shell_nix": SHELL_NIX, "run_sh": f"echo {i}"})
            assert status == 202, body
            return body["id"], f"{i}\n"

        with ThreadPoolExecutor(8) as pool:
            expected = dict(pool.map(submit, range(BURST)))
        accepted_s = time.monotonic() - started
        ended = {sid: served.api.wait(sid, 600) for sid in expected}
        took = time.monotonic() - started
        figures = Figures(f"a burst of {BURST} submissions (runner concurrency 4)",
                          acknowledged=len(expected),
                          finished=sum(s["status"] == "done" for s in ended.values()),
                          recovery_s=None,
                          extra={"accepted_in_s": round(accepted_s, 1),
                                 "all_ended_in_s": round(took, 1),
                                 "per_s": round(BURST / took, 2)})
        wrong = {sid: s["status"] for sid, s in ended.items()
                 if s["status"] != "done" or stage_stdout(s) != expected[sid]}
        # dockerd tells of the last containers' ends a moment after their results came.
        served.wait_until("every run's end reported by dockerd",
                          lambda: sum(runs.counts.values()) >= BURST, timeout=30)
        figures.lost = len(expected) - figures.finished
        figures.run_twice = len(runs.twice())
        figures.record()
        assert wrong == {}
        assert len(expected) == BURST
        assert runs.twice() == []
        assert sum(runs.counts.values()) == BURST
    finally:
        runs.close()
        clean_up(served)
