"""`nixjail serve` left idle: no part idles out, so a submission after two
minutes without work runs at once (the runner of the local default used to
exit after 30 s, and nothing started it again)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from serve_stack import serving, stage_stdout

pytestmark = [pytest.mark.docker, pytest.mark.nix]

IDLE_S = 125


def test_after_two_minutes_idle_a_submission_runs_at_once(tmp_path: Path) -> None:
    for served in serving(tmp_path):
        first = served.api.submit(run_sh="echo before")
        assert first["status"] == "done", first
        before = served.parts()
        # Idling is what is tested here: nothing to wait for but the clock.
        time.sleep(IDLE_S)
        assert served.parts() == before  # the same processes, none restarted
        started = time.monotonic()
        status, after = served.api.request(
            "POST", "/v1/submissions?wait=30",
            {"shell_nix": first["request"]["shell_nix"], "run_sh": "echo after"})
        elapsed = time.monotonic() - started
        assert status == 200 and after["status"] == "done", after
        assert stage_stdout(after) == "after\n"
        # Its environment is cached: a few hand-offs, one container, two stages.
        assert elapsed < 10, f"{elapsed:.1f} s"
        assert "idle for" not in served.log
