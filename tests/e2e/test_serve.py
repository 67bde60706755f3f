"""`nixjail serve`: every part of one host from one command, with no settings
file; a part that dies is noticed and started again; stopping leaves nothing."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_stack import our_container_names, our_containers
from serve_stack import Served, clean_up, serving, stage_stdout, start_serve

pytestmark = [pytest.mark.docker, pytest.mark.nix]


def containers_of(served: Served, submission_id: str) -> list[str]:
    return [name for name in our_container_names(served.runner_name)
            if name.startswith(f"nixjail-{submission_id}-")]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    yield from serving(tmp_path)


def test_every_part_runs_and_a_cached_submission_runs_through_all_of_them(
        served: Served) -> None:
    parts = served.parts()
    assert set(parts) == {"api", "runner", "cache-builder", "lease-expiry"}
    assert all(part["state"] == "running" for part in parts.values()), parts
    assert parts["runner"]["pid"] != parts["cache-builder"]["pid"]
    submission = served.api.submit(run_sh="echo through-every-part")
    assert submission["status"] == "done", submission
    # The cache builder built it (a dependencies stage of its own), the runner ran it.
    assert submission["stages"]["dependencies"]["status"] == "ok"
    assert submission["environment"] is not None
    assert stage_stdout(submission) == "through-every-part\n"
    assert f"submissions in {served.base / 'state'}" in served.log


def test_a_runner_killed_with_sigkill_is_restarted_and_runs_its_submission_again(
        served: Served) -> None:
    first_pid = served.parts()["runner"]["pid"]
    submission_id = served.create(run_sh="sleep 2; echo ran-to-the-end", cache=False)
    served.wait_until("the submission running",
                      lambda: served.status_of(submission_id) == "running"
                      and our_containers(served.runner_name))
    os.kill(first_pid, signal.SIGKILL)

    def restarted() -> dict | None:
        status, body = served.health()
        runner = body.get("parts", {}).get("runner", {}) if status == 200 else {}
        return runner if runner.get("pid") not in (None, first_pid) else None

    runner = served.wait_until("a new runner", restarted, timeout=30)
    assert runner["restarts"] == 1
    assert runner["last_exit"] == "killed by signal 9 (SIGKILL)"
    ended = served.api.wait(submission_id, 60)
    assert ended["status"] == "done", ended
    assert stage_stdout(ended) == "ran-to-the-end\n"
    assert ended["attempts"] == 2
    # The first attempt's container went with the runner that ran it.
    names = our_container_names(served.runner_name)
    assert not any(name.endswith(f"{submission_id}-1") for name in names), names
    assert "runner killed by signal 9 (SIGKILL); starting it again in 0 s" in served.log


@pytest.mark.parametrize("how", ["SIGTERM", "Ctrl-C"])
def test_stopping_leaves_no_container_and_no_process(tmp_path: Path, how: str) -> None:
    served = start_serve(tmp_path)
    try:
        # It outlasts the runner's stop grace (10 s), so the stop cuts it short.
        submission_id = served.create(run_sh="sleep 60", cache=False,
                                      limits={"run": {"wall_time_s": 40}})
        served.wait_until("the submission running",
                          lambda: served.status_of(submission_id) == "running"
                          and our_containers(served.runner_name))
        assert served.leftover_processes()  # the check sees serve's parts while they run
        if how == "SIGTERM":
            code = served.stop(signal.SIGTERM)
        else:
            code = served.stop(signal.SIGINT, group=True)
        assert code == 0, served.log[-3000:]
        assert our_containers(served.runner_name) == []
        assert our_containers(served.runner_name, warm=True) == []
        assert served.leftover_processes() == []
        assert "Traceback" not in served.log, served.log[-3000:]
        assert f"stopped (stopped by {'SIGTERM' if how == 'SIGTERM' else 'SIGINT'})" \
            in served.log
    finally:
        clean_up(served)
    # The stop gave the job back: a serve started again on the same state runs it.
    again = start_serve(tmp_path, after=served)
    try:
        assert again.status_of(submission_id) in ("queued", "running")
        assert again.api.request("GET", f"/v1/submissions/{submission_id}")[1]["attempts"] <= 2
        status, _ = again.api.request("DELETE", f"/v1/submissions/{submission_id}")
        assert status == 200
        assert again.stop() == 0
    finally:
        clean_up(again)


def test_a_part_that_keeps_dying_stops_everything_with_the_reason(tmp_path: Path) -> None:
    # The runner cannot make its socket under a file, so it dies at every start.
    run_dir = tmp_path / "run"
    settings = f"""
spool_dir = "{tmp_path / 'state'}"
run_dir = "{run_dir}"
[runner]
kick_socket = "/dev/null/runner.sock"
"""
    served = start_serve(tmp_path, settings_toml=settings, place=False, wait=False)
    try:
        try:
            code = served.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"serve did not stop:\n{served.log[-3000:]}")
        assert code == 1, served.log[-3000:]
        assert ("stopping: the runner stopped 5 times within 60 s "
                "(last: exited with code 1)") in served.log
        assert served.leftover_processes() == []
    finally:
        clean_up(served)


def test_a_submission_that_ends_within_the_stop_grace_finishes(tmp_path: Path) -> None:
    # A grace far above what the run takes, even on a machine busy with other tests.
    settings = "[runner]\nstop_grace_s = 60\n[cache_builder]\nenabled = true\n"
    served = start_serve(tmp_path, settings_toml=settings)
    try:
        # Its environment built and cached first: the run under test is then
        # the container and `sleep 2`.
        assert served.api.submit(run_sh="true")["status"] == "done"
        submission_id = served.create(run_sh="sleep 2; echo finished-in-the-grace")
        # Its own container started (the warm-up's may still be on its way out).
        served.wait_until("the submission's container running", lambda: any(
            submission_id in name
            for name in our_container_names(served.runner_name, running=True)))
        assert served.stop(signal.SIGTERM) == 0, served.log[-3000:]
        assert "giving" not in served.log, served.log[-3000:]  # nothing was given back
    finally:
        clean_up(served)
    again = start_serve(tmp_path, settings_toml=settings, after=served)
    try:
        # Ended before the first serve stopped: no wait needed, no second run.
        status, ended = again.api.request("GET", f"/v1/submissions/{submission_id}")
        assert (status, ended["status"]) == (200, "done"), ended
        assert stage_stdout(ended) == "finished-in-the-grace\n"
        assert ended["attempts"] == 1
    finally:
        clean_up(again)


def test_cancelling_a_running_submission_stops_its_container_once_and_drops_its_roots(
        served: Served) -> None:
    roots = served.base / "state" / "gcroots" / "running"
    submission_id = served.create(run_sh="sleep 30", limits={"run": {"wall_time_s": 40}})
    served.wait_until("running", lambda: served.status_of(submission_id) == "running"
                      and containers_of(served, submission_id))
    assert sorted(p.name for p in roots.iterdir() if p.name.startswith(submission_id)) == [
        f"{submission_id}-inputs", f"{submission_id}-script"]
    status, cancelled = served.api.request("DELETE", f"/v1/submissions/{submission_id}")
    assert (status, cancelled["status"]) == (200, "cancelled")
    served.wait_until("its container gone", lambda: not containers_of(served, submission_id))
    served.wait_until("its roots gone", lambda: not any(
        p.name.startswith(submission_id) for p in roots.iterdir()))
    # The next submission runs as ever, and nothing went wrong on the way.
    assert stage_stdout(served.api.submit(run_sh="echo next")) == "next\n"
    assert "ERROR" not in served.log and "Traceback" not in served.log, served.log[-3000:]


def test_the_warm_pool_learns_the_environment_and_gives_each_container_to_one_submission(
        served: Served) -> None:
    roots = served.base / "state" / "gcroots" / "running"

    def warm() -> set[str]:
        return {c.id for c in our_containers(served.runner_name, warm=True)}

    assert stage_stdout(served.api.submit(run_sh="echo cold")) == "cold\n"
    before = served.wait_until("2 warm containers", lambda: (w := warm()) and len(w) == 2 and w)
    # Each holds its environment's closure against the garbage collector.
    assert len([p for p in roots.iterdir() if p.name.startswith("nixjail-pool-")]) == 4
    leaver = served.api.submit(run_sh="echo secret > /work/left; echo $$ > /tmp/left; echo took")
    assert stage_stdout(leaver) == "took\n"
    after = served.wait_until("a replacement", lambda: (w := warm()) and len(w) == 2
                              and w != before and w)
    assert len(before - after) == 1, (before, after)  # one taken, one made for it
    # The next submission gets a container nobody used: nothing of the last one.
    looker = served.api.submit(run_sh="ls -A /work /tmp")
    assert "left" not in stage_stdout(looker), stage_stdout(looker)
    assert served.stop() == 0
    assert our_containers(served.runner_name, warm=True) == []
    assert not any(p.name.startswith("nixjail-pool-") for p in roots.iterdir())
