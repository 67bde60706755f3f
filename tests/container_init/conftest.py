"""Fixtures that run container init as a subprocess on this host, with the real nsjail."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from init_helpers import INIT, NSJAIL, InitRun, parse_lines


@pytest.fixture
def init_env():
    # Not under tmp_path: nsjail mounts these paths before dropping to the jail user, and
    # pytest's base directory is closed to everyone but root's own uid (mode 0700).
    base = Path(tempfile.mkdtemp(prefix="nixjail-init-test-"))
    base.chmod(0o711)
    work = base / "work"
    state = base / "state"
    state.mkdir()
    yield {
        **os.environ,
        "NIXJAIL_NSJAIL": NSJAIL or "",
        "NIXJAIL_WORK_DIR": str(work),
        "NIXJAIL_STATE_DIR": str(state),
    }
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def run_init(init_env: dict[str, str]):
    def run(job: dict[str, Any] | bytes, timeout: float = 30) -> InitRun:
        data = job if isinstance(job, bytes) else json.dumps(job).encode() + b"\n"
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-I", "-u", str(INIT)],
            input=data,
            capture_output=True,
            env=init_env,
            timeout=timeout,
        )
        elapsed = time.monotonic() - started
        return InitRun(parse_lines(proc.stdout), proc.returncode, proc.stderr.decode(), elapsed)

    return run


@pytest.fixture
def start_init(init_env: dict[str, str]):
    """Start init with pipes for tests that talk to it (handshake, signals)."""
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-u", str(INIT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=init_env,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream:
                stream.close()


