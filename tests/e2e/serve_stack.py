"""`nixjail serve` as a user runs it: one process, every part of the host, real
dockerd, nix and the runner image, the fixture nixpkgs it finds by itself."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from e2e_stack import NIXJAIL, Stack, free_port, our_containers, wait_for_http

from nixjail import docker as nj_docker

# Every process `nixjail serve` starts inherits this variable: a process that
# still carries it after serve stopped was left behind.
MARK_ENV = "NIXJAIL_TEST_SERVE_MARK"


@dataclass
class Served:
    process: subprocess.Popen
    api: Stack
    base: Path
    run_dir: Path
    runner_name: str
    mark: str

    @property
    def log(self) -> str:
        return (self.base / "serve.log").read_text(errors="replace")

    def health(self) -> tuple[int, dict]:
        return self.api.request("GET", "/healthz")

    def parts(self) -> dict:
        status, body = self.health()
        assert status == 200, body
        return body["parts"]

    def wait_until(self, what: str, check: Callable[[], object], timeout: float = 60) -> object:
        """`check()`'s first true value: the state of another process, looked at
        until it holds, failing at once if serve itself died."""
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            assert self.process.poll() is None, f"serve died:\n{self.log[-3000:]}"
            assert time.monotonic() < deadline, f"{what} within {timeout} s:\n{self.log[-3000:]}"
            time.sleep(0.05)

    def status_of(self, submission_id: str) -> str:
        return self.api.request("GET", f"/v1/submissions/{submission_id}")[1]["status"]

    def create(self, **fields: object) -> str:
        status, body = self.api.request("POST", "/v1/submissions",
                                        {"shell_nix": SHELL_NIX, **fields})
        assert status == 202, body
        return body["id"]

    def stop(self, sig: int = signal.SIGTERM, *, group: bool = False,
             timeout: float = 60) -> int:
        if self.process.poll() is None:
            if group:  # as a terminal's Ctrl-C reaches the whole process group
                os.killpg(self.process.pid, sig)
            else:
                self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)

    def leftover_processes(self) -> list[str]:
        """Processes other than serve itself that carry this serve's mark."""
        found = []
        needle = f"{MARK_ENV}={self.mark}".encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == self.process.pid:
                continue
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(f"{entry.name}: {(entry / 'cmdline').read_bytes()!r}")
            except OSError:
                continue  # gone meanwhile, or a kernel thread
        return found


SHELL_NIX = "{ pkgs ? import <nixpkgs> {} }: pkgs.mkShell { packages = [ pkgs.busybox ]; }"


def start_serve(base: Path, *, settings_toml: str | None = None, place: bool = True,
                wait: bool = True, after: Served | None = None) -> Served:
    """`nixjail serve` with a state dir of its own under `base` and no
    settings file unless `settings_toml` is given; `place` false leaves the
    places to that file; `wait` false does not wait for it to be healthy.
    `after`: the serve this one follows on the same host (the same names)."""
    run_dir = Path(tempfile.mkdtemp(prefix="nixjail-serve-run-"))
    run_dir.chmod(0o755)
    port = free_port()
    mark = uuid.uuid4().hex
    runner_name = after.runner_name if after is not None else f"serve-{mark[:12]}"
    env = {**os.environ, MARK_ENV: mark, "NIXJAIL_RUNNER_NAME": runner_name,
           "NIXJAIL_CACHE_BUILDER_NAME": f"cache-builder-{runner_name}"}
    env.pop("NIXJAIL_SETTINGS", None)
    argv = [*NIXJAIL, "serve", "--listen", f"127.0.0.1:{port}"]
    if place:
        argv += ["--state-dir", str(base / "state"), "--run-dir", str(run_dir)]
    if settings_toml is not None:
        (base / "settings.toml").write_text(settings_toml)
        argv += ["--settings", str(base / "settings.toml")]
    log = open(base / "serve.log", "ab")  # noqa: SIM115 - lives with the process
    process = subprocess.Popen(argv, env=env, stdout=log, stderr=log, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    api = Stack(base=base, url=url, settings_file=base / "settings.toml")
    served = Served(process, api, base, run_dir, runner_name, mark)
    try:
        if wait:
            wait_for_http(url, timeout=60)
    except BaseException:
        clean_up(served)
        raise
    return served


def clean_up(served: Served) -> None:
    """Whatever a failed test left: serve, its processes, its containers."""
    if served.process.poll() is None:
        os.killpg(served.process.pid, signal.SIGKILL)
        served.process.wait(timeout=30)
    for container in [*our_containers(served.runner_name),
                      *our_containers(served.runner_name, warm=True)]:
        nj_docker.remove(container)  # gone meanwhile, or being removed: fine
    shutil.rmtree(served.run_dir, ignore_errors=True)


def serving(base: Path, **options: object) -> Iterator[Served]:
    served = start_serve(base, **options)  # type: ignore[arg-type]
    try:
        yield served
    finally:
        clean_up(served)


def stage_stdout(submission: dict, stage: str = "run") -> str:
    return (submission["stages"][stage] or {}).get("stdout", "")


def dumps(value: object) -> str:
    return json.dumps(value, indent=1)[:3000]
