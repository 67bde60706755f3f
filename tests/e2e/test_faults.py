"""Faults on a whole `nixjail serve` host, each with its figures: every
acknowledged submission finishes exactly once (dockerd's events count the
runs that finished), nothing on disk is torn, and the host recovers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import docker
import pytest
from e2e_stack import our_container_names, our_containers
from reliability import Figures, FinishedRuns
from serve_stack import SHELL_NIX, Served, clean_up, stage_stdout, start_serve

pytestmark = [pytest.mark.docker, pytest.mark.nix]


def ended_all(served: Served, ids: list[str], timeout: float = 120) -> dict[str, dict]:
    return {sid: served.api.wait(sid, timeout) for sid in ids}


def assert_whole(state_dir: Path) -> int:
    """Every record on disk parses; returns how many there are."""
    records = list((state_dir / "submissions").glob("*.json"))
    for record in records:
        json.loads(record.read_bytes())
    return len(records)


def check_exactly_once(figures: Figures, runs: FinishedRuns, ended: dict[str, dict],
                       expected_stdout: dict[str, str]) -> None:
    figures.finished = sum(1 for s in ended.values() if s["status"] == "done")
    figures.lost = figures.acknowledged - figures.finished
    figures.run_twice = len(runs.twice())
    figures.record()
    for sid, submission in ended.items():
        assert submission["status"] == "done", json.dumps(submission)[:2000]
        assert stage_stdout(submission) == expected_stdout[sid]
    assert figures.lost == 0
    assert runs.twice() == []


def test_runner_killed_with_several_submissions_in_flight(tmp_path: Path) -> None:
    served = start_serve(tmp_path, settings_toml="[runner]\nconcurrency = 3\n")
    runs = FinishedRuns(served.runner_name)
    try:
        ids = [served.create(run_sh=f"sleep 2; echo {i}", cache=False) for i in range(6)]
        figures = Figures("runner killed (SIGKILL) with 3 submissions running",
                          acknowledged=len(ids))
        served.wait_until("3 running", lambda: len(our_containers(served.runner_name)) == 3)
        killed_at = time.monotonic()
        os.kill(served.parts()["runner"]["pid"], signal.SIGKILL)
        # Recovered once a new runner runs a submission the dead one held.
        served.wait_until("a second attempt running", lambda: any(
            name.endswith("-2") for name in our_container_names(served.runner_name)))
        figures.recovery_s = time.monotonic() - killed_at
        ended = ended_all(served, ids)
        figures.extra["attempts"] = sorted(s["attempts"] for s in ended.values())
        check_exactly_once(figures, runs, ended, {sid: f"{i}\n" for i, sid in enumerate(ids)})
        assert figures.extra["attempts"].count(2) == 3
        assert_whole(tmp_path / "state")
    finally:
        runs.close()
        clean_up(served)


def test_serve_killed_during_a_burst_loses_nothing_it_acknowledged(tmp_path: Path) -> None:
    served = start_serve(tmp_path)
    runs = FinishedRuns(served.runner_name)
    acknowledged: dict[str, str] = {}
    stop = threading.Event()

    def burst() -> None:
        for i in range(200):
            if stop.is_set():
                return
            try:
                status, body = served.api.request(
                    "POST", "/v1/submissions", {"shell_nix": SHELL_NIX, "run_sh": f"echo {i}"})
            except OSError:
                return  # the API is gone: what it acknowledged is what counts
            if status == 202:
                acknowledged[body["id"]] = f"{i}\n"

    sender = threading.Thread(target=burst)
    try:
        sender.start()
        served.wait_until("20 acknowledged", lambda: len(acknowledged) >= 20)
        os.killpg(served.process.pid, signal.SIGKILL)  # the host's processes, at once
        killed_at = time.monotonic()
        served.process.wait(timeout=30)
        stop.set()
        sender.join(timeout=60)
        assert_whole(tmp_path / "state")
        again = start_serve(tmp_path, after=served)
        try:
            figures = Figures("serve (the API and every part) killed with SIGKILL "
                              "during a burst", acknowledged=len(acknowledged))
            ended = ended_all(again, list(acknowledged))
            figures.recovery_s = time.monotonic() - killed_at
            check_exactly_once(figures, runs, ended, acknowledged)
            assert assert_whole(tmp_path / "state") >= len(acknowledged)
        finally:
            clean_up(again)
    finally:
        stop.set()
        runs.close()
        clean_up(served)


def test_cache_builder_killed_mid_build(tmp_path: Path) -> None:
    served = start_serve(tmp_path)
    runs = FinishedRuns(served.runner_name)
    try:
        # A build that takes a while, so the kill lands in it.
        shell_nix = ("{ pkgs ? import <nixpkgs> {} }: pkgs.mkShell { packages = [ "
                     "(pkgs.runCommand \"slow-" + os.urandom(6).hex() + "\" {} "
                     "\"sleep 3; mkdir -p $out/bin\") pkgs.busybox ]; }")
        sid = served.create(shell_nix=shell_nix, run_sh="echo built")
        served.wait_until("building", lambda: served.status_of(sid) == "building")
        builder = served.parts()["cache-builder"]["pid"]
        os.kill(builder, signal.SIGKILL)
        killed_at = time.monotonic()
        figures = Figures("cache builder killed (SIGKILL) mid-build", acknowledged=1)
        ended = ended_all(served, [sid])
        figures.recovery_s = time.monotonic() - killed_at
        assert ended[sid]["stages"]["dependencies"]["status"] == "ok", ended[sid]
        check_exactly_once(figures, runs, ended, {sid: "built\n"})
        assert served.parts()["cache-builder"]["restarts"] == 1
    finally:
        runs.close()
        clean_up(served)


def test_everything_stopped_and_started_again_with_work_queued(tmp_path: Path) -> None:
    settings = "[runner]\nconcurrency = 1\n[cache_builder]\nenabled = true\n"
    served = start_serve(tmp_path, settings_toml=settings)
    runs = FinishedRuns(served.runner_name)
    try:
        ids = [served.create(run_sh=f"echo {i}", cache=False) for i in range(10)]
        figures = Figures("every part stopped (SIGTERM) and started again with "
                          "10 submissions queued", acknowledged=len(ids))
        assert served.stop() == 0
        assert served.leftover_processes() == []
        started_at = time.monotonic()
        again = start_serve(tmp_path, settings_toml=settings, after=served)
        try:
            ended = ended_all(again, ids)
            figures.recovery_s = time.monotonic() - started_at
            check_exactly_once(figures, runs, ended, {sid: f"{i}\n" for i, sid in enumerate(ids)})
        finally:
            clean_up(again)
    finally:
        runs.close()
        clean_up(served)


class PrivateDockerd:
    """A dockerd of this test alone (its own data and exec roots and socket),
    so that restarting it disturbs no other test; the runner image is loaded
    into it from the host's dockerd."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.socket = base / "docker.sock"
        self.host = f"unix://{self.socket}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.base / "dockerd.log", "ab")  # noqa: SIM115 - lives with the process
        self.process = subprocess.Popen(
            ["dockerd", "--bridge=none", "--iptables=false", "--ip6tables=false",
             "--data-root", str(self.base / "data"), "--exec-root", str(self.base / "exec"),
             "--pidfile", str(self.base / "dockerd.pid"), "--host", self.host],
            stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                docker.DockerClient(base_url=self.host).ping()
                return
            except Exception:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError("the private dockerd did not come up:\n"
                                         + (self.base / "dockerd.log").read_text()) from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=60)

    def load_runner_image(self) -> None:
        save = subprocess.Popen(["docker", "save", "nixjail-runner:latest"],
                                stdout=subprocess.PIPE)
        subprocess.run(["docker", "load", "-q"], stdin=save.stdout, check=True,
                       env={**os.environ, "DOCKER_HOST": self.host}, capture_output=True)
        assert save.wait() == 0


def test_dockerd_restarted_mid_run(tmp_path: Path) -> None:
    # Short paths: a unix socket's path has a length limit.
    base = Path(tempfile.mkdtemp(prefix="nj-dockerd-"))
    dockerd = PrivateDockerd(base)
    try:
        dockerd.start()
        dockerd.load_runner_image()
        os.environ["DOCKER_HOST"] = dockerd.host  # serve and its parts inherit it
        try:
            served = start_serve(tmp_path, settings_toml="[runner]\nconcurrency = 2\n")
        finally:
            del os.environ["DOCKER_HOST"]
        runs = FinishedRuns(served.runner_name, docker_host=dockerd.host)
        try:
            ids = [served.create(run_sh=f"sleep 2; echo {i}", cache=False) for i in range(4)]
            figures = Figures("dockerd restarted with 2 submissions running",
                              acknowledged=len(ids))
            served.wait_until("2 running", lambda: [served.status_of(i) for i in ids].count(
                "running") == 2)
            stopped_at = time.monotonic()
            dockerd.stop()  # its containers go with it
            runs.close()
            dockerd.start()
            runs = FinishedRuns(served.runner_name, docker_host=dockerd.host)
            ended = ended_all(served, ids)
            figures.recovery_s = time.monotonic() - stopped_at
            figures.extra["attempts"] = sorted(s["attempts"] for s in ended.values())
            check_exactly_once(figures, runs, ended, {sid: f"{i}\n" for i, sid in enumerate(ids)})
            assert "not leasing until this host is ready again" in served.log
        finally:
            runs.close()
            clean_up(served)
    finally:
        dockerd.stop()
        subprocess.run(["rm", "-rf", str(base)], check=False)
