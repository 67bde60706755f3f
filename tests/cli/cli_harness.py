"""Helpers of the CLI tests: a real `nixjail api` on loopback with its own spool,
and a toy worker.

The worker takes jobs straight from the spool, as the runner does, and runs
the submission's scripts with the host's `sh` in a temporary directory: no
Nix and no container, but the files, scripts and stdin that reach it are the
ones `nixjail submit` sent.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from nixjail.models import StageResult, StageStatus, Submission
from nixjail.settings import Settings, load_settings
from nixjail.spool import Queue, Spool

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
NIXJAIL = Path(sys.executable).with_name("nixjail")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_settings(directory: Path, *, port: int = 0, extra: str = "",
                   api_extra: str = "") -> Path:
    """A settings TOML with a spool of its own under `directory`."""
    path = directory / "settings.toml"
    path.write_text(
        f'spool_dir = "{directory / "spool"}"\n'
        f'run_dir = "{directory / "run"}"\n'
        f"{extra}\n"
        "[api]\n"
        f'listen = "127.0.0.1:{port or free_port()}"\n'
        "max_wait_s = 5\n"
        f"{api_extra}\n"
        "[runner]\n"
        f'kick_socket = "{directory / "run" / "runner.sock"}"\n')
    return path


def nixjail(*args: str | Path, stdin: str | None = None, timeout: float = 60,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed `nixjail` entry point."""
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("NIXJAIL_API", "NIXJAIL_TOKEN", "NIXJAIL_SETTINGS")}
    environment.update(env or {})
    return subprocess.run([str(NIXJAIL), *map(str, args)], input=stdin, text=True,
                          capture_output=True, timeout=timeout, env=environment, check=False)


@dataclass
class Api:
    url: str
    settings_path: Path
    settings: Settings
    spool: Spool
    process: subprocess.Popen[bytes]


def start_api(directory: Path, extra: str = "", *, api_extra: str = "",
              settings_path: Path | None = None) -> Api:
    """`nixjail api` with the settings at `settings_path`, or new ones under `directory`."""
    settings_path = settings_path or write_settings(directory, extra=extra,
                                                    api_extra=api_extra)
    settings = load_settings(settings_path)
    url = f"http://{settings.api.listen}"
    log = open(directory / "api.log", "ab")  # noqa: SIM115 - outlives this function
    process = subprocess.Popen([str(NIXJAIL), "api", "--settings", str(settings_path)],
                               stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"{url}/v1/submissions?limit=1", timeout=1):
                break
        except urllib.error.HTTPError:
            break  # it answers, if only to say we need a token
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("nixjail api did not start:\n"
                                   + (directory / "api.log").read_text()) from None
            time.sleep(0.05)
    return Api(url, settings_path, settings, Spool.from_settings(settings), process)


def stop_api(api: Api, *, crash: bool = False) -> None:
    api.process.send_signal(signal.SIGKILL if crash else signal.SIGTERM)
    try:
        api.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        api.process.kill()
        api.process.wait()


def _result(process: subprocess.CompletedProcess[bytes], wall_ms: int) -> StageResult:
    if process.returncode < 0:
        status, code, sig = StageStatus.signaled, None, -process.returncode
    else:
        status = StageStatus.ok if process.returncode == 0 else StageStatus.nonzero_exit
        code, sig = process.returncode, None
    return StageResult(status=status, exit_code=code, signal=sig,
                       stdout=process.stdout.decode(errors="replace"),
                       stderr=process.stderr.decode(errors="replace"),
                       wall_time_ms=wall_ms)


def toy_stages(submission: Submission) -> dict[str, StageResult]:
    """Run compile.sh then run.sh with the host's sh in a fresh copy of the files."""
    request = submission.request
    results: dict[str, StageResult] = {}
    with tempfile.TemporaryDirectory() as work:
        for name, data in request.file_bytes().items():
            (Path(work) / name).parent.mkdir(parents=True, exist_ok=True)
            (Path(work) / name).write_bytes(data)
        for stage, script in (("compile", request.compile_sh), ("run", request.run_sh)):
            compiled = results.get("compile")
            blocked = compiled is not None and compiled.status not in (
                StageStatus.ok, StageStatus.skipped)
            if script is None or blocked:
                results[stage] = StageResult.skipped()
                continue
            started = time.monotonic()
            process = subprocess.run(
                ["sh", "-c", script], cwd=work, capture_output=True, timeout=10, check=False,
                input=request.stdin.encode() if stage == "run" else b"")
            results[stage] = _result(process, int((time.monotonic() - started) * 1000))
    return results


class ToyWorker(threading.Thread):
    """Takes one submission through every queue it lands in, then stops."""

    def __init__(self, spool: Spool, *, delay_s: float = 0) -> None:
        super().__init__(daemon=True)
        self.spool = spool
        self.delay_s = delay_s
        self.done: Submission | None = None
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            self._work()
        except BaseException as exc:
            self.failure = exc

    def _work(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            lease = self.spool.lease(Queue.dependencies, "toy-worker")
            if lease is not None:
                time.sleep(self.delay_s)
                self.spool.report_stage(lease, "dependencies", StageResult(
                    status=StageStatus.ok, exit_code=0, wall_time_ms=120, cached=True))
                self.spool.complete(lease)
                continue
            lease = self.spool.lease(Queue.run, "toy-worker", wait_s=0.1)
            if lease is None:
                continue
            for stage, result in toy_stages(self.spool.get(lease.submission_id)).items():
                time.sleep(self.delay_s)
                self.spool.report_stage(lease, stage, result)
            self.done = self.spool.complete(lease)
            return
        raise TimeoutError("no submission came")

    def finish(self) -> Submission:
        self.join(timeout=30)
        if self.failure is not None:
            raise self.failure
        assert self.done is not None
        return self.done


def as_json(text: str) -> dict:
    return json.loads(text)


def submission_id_of(stderr: str) -> str:
    """The id in the last line `submit` prints: `submission ID: STATUS`."""
    last = stderr.splitlines()[-1]
    assert last.startswith("submission "), stderr
    return last.split()[1].rstrip(":")


def make_dir(root: Path, files: dict[str, str | bytes], name: str = "submission") -> Path:
    """A submission directory under `root` holding `files`."""
    directory = root / name
    for relative, content in files.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return directory


SHELL_NIX = "{ pkgs ? import <nixpkgs> {} }: pkgs.mkShell { packages = [ pkgs.busybox ]; }\n"
