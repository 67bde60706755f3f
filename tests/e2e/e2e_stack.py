"""A whole nixjail on this host: `nixjail api` and `nixjail runner` as real
processes, real dockerd and the runner image, the fixture nixpkgs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURE_NIXPKGS = REPO / "tests" / "fixtures" / "nixpkgs"
SHELL_NIX = "{ pkgs ? import <nixpkgs> {} }: pkgs.mkShell { packages = [ pkgs.busybox ]; }"
NIXJAIL = [sys.executable, "-m", "nixjail.cli.main"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Stack:
    base: Path
    url: str
    settings_file: Path
    runner: subprocess.Popen | None = None
    runner_name: str = ""
    token: str | None = None

    def start_runner(self) -> subprocess.Popen:
        env = {**os.environ, "NIXJAIL_RUNNER_NAME": self.runner_name}
        log = open(self.base / "runner.log", "ab")  # noqa: SIM115 - lives with the process
        self.runner = subprocess.Popen(
            [*NIXJAIL, "runner", "--settings", str(self.settings_file)],
            env=env, stdout=log, stderr=log)
        return self.runner

    def stop_runner(self, sig: int = signal.SIGTERM) -> None:
        if self.runner is not None and self.runner.poll() is None:
            self.runner.send_signal(sig)
            self.runner.wait(timeout=30)

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=120) as answer:
                return answer.status, json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as refused:
            return refused.code, json.loads(refused.read() or b"null")

    def submit(self, wait: float = 90, **fields: object) -> dict:
        body = {"shell_nix": SHELL_NIX, **fields}
        status, submission = self.request("POST", f"/v1/submissions?wait={wait}", body)
        assert status in (200, 202), submission
        deadline = time.monotonic() + wait
        while submission["status"] not in ("done", "failed", "error", "cancelled"):
            assert time.monotonic() < deadline, submission
            status, submission = self.request(
                "GET", f"/v1/submissions/{submission['id']}?wait=30")
            assert status == 200
        return submission


def wait_for_http(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2):
                return
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def our_containers(runner_name: str) -> list:
    return docker.from_env().containers.list(
        all=True, filters={"label": f"org.nixjail.runner={runner_name}"})


def start_stack(base: Path, *, remote_runner: bool = False) -> Iterator[Stack]:
    """API and runner on this host; `remote_runner` makes the runner lease over
    HTTP with a worker token, as a worker host of its own does."""
    if not (FIXTURE_NIXPKGS / "bin" / "busybox").exists():
        pytest.fail("the fixture nixpkgs is not prepared: run scripts/bootstrap")
    port = free_port()
    settings_file = base / "settings.toml"
    runner_name = f"test-{base.name}-{os.getpid()}"
    url = f"http://127.0.0.1:{port}"
    api_auth = runner_remote = ""
    if remote_runner:
        (base / "tokens").write_text("submitter sub-token\nworker work-token\n")
        (base / "worker-token").write_text("work-token\n")
        api_auth = f'tokens_file = "{base / "tokens"}"'
        runner_remote = f'api_url = "{url}"\napi_token_file = "{base / "worker-token"}"'
    settings_file.write_text(f"""
spool_dir = "{base / 'spool'}"
run_dir = "{base / 'run'}"
lease_s = 6

[api]
listen = "127.0.0.1:{port}"
{api_auth}

[runner]
kick_socket = "{base / 'run' / 'runner.sock'}"
idle_exit_s = 600
concurrency = 2
nixpkgs = "{FIXTURE_NIXPKGS}"
{runner_remote}
""")
    log = open(base / "api.log", "ab")  # noqa: SIM115 - lives with the process
    api = subprocess.Popen([*NIXJAIL, "api", "--settings", str(settings_file)],
                           stdout=log, stderr=log)
    stack = Stack(base=base, url=url, settings_file=settings_file, runner_name=runner_name,
                  token="sub-token" if remote_runner else None)
    try:
        wait_for_http(url)
        stack.start_runner()
        yield stack
    finally:
        stack.stop_runner()
        api.terminate()
        api.wait(timeout=30)
        for container in our_containers(runner_name):
            container.remove(force=True)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from start_stack(tmp_path_factory.mktemp("stack"))


@pytest.fixture(scope="module")
def remote_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from start_stack(tmp_path_factory.mktemp("remote"), remote_runner=True)
