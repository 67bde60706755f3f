"""What the benchmarks run against: `nixjail serve` as a user starts it, in a
temporary state dir on a free loopback port, and the two event sources the
breakdown reads (the spool's directories through inotify, and docker events).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

import docker

from nixjail.client import Client
from nixjail.docker import LABEL_RUNNER, LABEL_SUBMISSION
from nixjail.holders import BUILDER_NAME_ENV, RUNNER_NAME_ENV
from nixjail.settings import SETTINGS_ENV
from nixjail.watch import IN_MOVED_TO, inotify_events

NIXJAIL = [sys.executable, "-m", "nixjail.cli.main"]
READY_LINE = "nixjail serve: API on"
START_TIMEOUT_S = 120
STOP_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def progress(line: str) -> None:
    """What the bench is doing, on stderr (the report goes to stdout)."""
    print(f"bench: {line}", file=sys.stderr, flush=True)


def rss_kib(pid: int) -> int:
    """Resident memory of process `pid` (VmRSS), KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ValueError(f"process {pid} reports no VmRSS")


def is_submission_id(name: str) -> bool:
    return len(name) == 26 and all(c in "0123456789abcdef" for c in name)


class Serve:
    """`nixjail serve` with a state dir of its own; `settings_toml` (a file
    for --settings) only where a row needs a setting the local default lacks.
    A context manager: leaving it stops serve and removes what it left."""

    def __init__(self, *, settings_toml: str | None = None) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="nixjail-bench-"))
        # The cache builder's jail, an unprivileged uid, reaches its job's
        # files under the run dir (as scripts/all-in-one does).
        self.base.chmod(0o755)
        self.state_dir = self.base / "state"
        self.run_dir = self.base / "run"
        self.runner_name = f"bench-{uuid.uuid4().hex[:12]}"
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log_path = self.base / "serve.log"
        self.client = Client(self.url)
        self._settings_toml = settings_toml
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Serve:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _start(self) -> None:
        env = {**os.environ, RUNNER_NAME_ENV: self.runner_name,
               BUILDER_NAME_ENV: f"cache-builder-{self.runner_name}"}
        env.pop(SETTINGS_ENV, None)
        argv = [*NIXJAIL, "serve", "--listen", self.url.removeprefix("http://"),
                "--state-dir", str(self.state_dir), "--run-dir", str(self.run_dir)]
        if self._settings_toml is not None:
            (self.base / "settings.toml").write_text(self._settings_toml)
            argv += ["--settings", str(self.base / "settings.toml")]
        # Its own session: a Ctrl-C at the terminal reaches the bench, which
        # then stops serve in order.
        self.process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        ready = threading.Event()
        threading.Thread(target=self._log, args=(ready,), name="serve-log",
                         daemon=True).start()
        if not ready.wait(START_TIMEOUT_S) or self.process.poll() is not None:
            raise RuntimeError(f"nixjail serve did not get ready; its log:\n{self.log()[-3000:]}")
        status, health = self.client.request("GET", "/healthz")
        if status != 200:
            raise RuntimeError(f"nixjail serve is not healthy: {health}")
        progress(f"nixjail serve (pid {self.process.pid}, runner {self.runner_name}) on "
                 f"{self.url}, state in {self.base}")

    def _log(self, ready: threading.Event) -> None:
        assert self.process is not None and self.process.stdout is not None
        with open(self.log_path, "ab") as log:
            for line in self.process.stdout:
                log.write(line)
                log.flush()
                if READY_LINE.encode() in line:
                    ready.set()
        ready.set()  # it ended: the waiter sees that

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def part_pid(self, part: str) -> int:
        _, health = self.client.request("GET", "/healthz")
        pid = health["parts"][part]["pid"]
        if not pid:
            raise RuntimeError(f"serve's {part} is not running: {health['parts'][part]}")
        return pid

    def stop(self) -> None:
        """SIGTERM (as Ctrl-C would), then whatever is left: its process
        group, containers of its runner, its temporary dir."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(STOP_TIMEOUT_S)
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)  # a part it left behind
        with contextlib.suppress(docker.errors.DockerException):
            for container in docker.from_env().containers.list(
                    all=True, sparse=True, filters={"label": f"{LABEL_RUNNER}={self.runner_name}"}):
                with contextlib.suppress(docker.errors.NotFound):
                    container.remove(force=True)
        shutil.rmtree(self.base, ignore_errors=True)


# -- the spool's hand-offs, as they happen ------------------------------------------

class SpoolEvents:
    """When each submission's job entered each spool directory (wall clock,
    seconds), read with inotify: every entry is put in place by a rename,
    so IN_MOVED_TO is the moment of each hand-off. The directories are those
    the spool documents (nixjail.spool): queues/Q, leased/Q, ended/STATUS."""

    def __init__(self, spool_dir: Path) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        add = libc.inotify_add_watch
        add.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
        self._labels: dict[int, str] = {}
        for kind, label in (("queues", "queued for {}"), ("leased", "{} job leased"),
                            ("ended", "ended {}")):
            for directory in sorted((spool_dir / kind).iterdir()):
                wd = add(self._fd, os.fsencode(directory), IN_MOVED_TO)
                if wd < 0:
                    raise OSError(ctypes.get_errno(), f"inotify_add_watch {directory}")
                self._labels[wd] = label.format(directory.name)
        self._lock = threading.Lock()
        self._seen: dict[str, list[tuple[float, str]]] = defaultdict(list)
        self._changed = threading.Condition(self._lock)
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._read, name="spool-events", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            ready, _, _ = select.select([self._fd, self._stop_r], [], [])
            now = time.time()
            if self._stop_r in ready:
                return
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                continue
            with self._lock:
                for wd, _mask, name in inotify_events(data):
                    if wd in self._labels and is_submission_id(name):
                        self._seen[name].append((now, self._labels[wd]))
                self._changed.notify_all()

    def of(self, submission_id: str) -> list[tuple[float, str]]:
        with self._lock:
            return list(self._seen.get(submission_id, ()))

    def wait_for(self, submission_id: str, label: str, timeout_s: float) -> float:
        """When `submission_id` reached `label` (waiting for it up to `timeout_s`)."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while True:
                for when, seen in self._seen.get(submission_id, ()):
                    if seen == label:
                        return when
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{submission_id} never reached {label!r}")
                self._changed.wait(remaining)

    def close(self) -> None:
        os.write(self._stop_w, b"x")
        self._thread.join()
        for fd in (self._fd, self._stop_r, self._stop_w):
            os.close(fd)


def _named(container_name: str) -> str | None:
    parts = container_name.split("-")
    return parts[1] if len(parts) == 3 and parts[0] == "nixjail" \
        and is_submission_id(parts[1]) else None


class DockerEvents:
    """Docker's events of one runner's containers, by submission: (wall clock
    seconds, "container ACTION")."""

    def __init__(self, runner_name: str) -> None:
        self._client = docker.from_env()
        self._stream = self._client.events(
            decode=True, filters={"type": "container", "label": f"{LABEL_RUNNER}={runner_name}"})
        self._lock = threading.Lock()
        self._seen: dict[str, list[tuple[float, str]]] = defaultdict(list)
        self._thread = threading.Thread(target=self._read, name="docker-events", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with contextlib.suppress(Exception):  # the stream ends when closed
            for event in self._stream:
                attributes = event.get("Actor", {}).get("Attributes", {})
                # A warm pool's container has no submission label: the name
                # it takes when a submission takes it (nixjail-ID-ATTEMPT) says.
                submission_id = attributes.get(LABEL_SUBMISSION) or _named(
                    attributes.get("name", ""))
                action = event.get("Action") or event.get("status", "")
                if submission_id and not action.startswith("exec_"):
                    with self._lock:
                        self._seen[submission_id].append(
                            (event["timeNano"] / 1e9, f"container {action}"))

    def of(self, submission_id: str) -> list[tuple[float, str]]:
        with self._lock:
            return list(self._seen.get(submission_id, ()))

    def close(self) -> None:
        self._stream.close()
        self._thread.join(10)
        self._client.close()
