"""`python -m bench` runs on a small count against the real stack and prints
every row of issue 11 with numbers, as a table and as JSON; stopped with
Ctrl-C it leaves nothing behind. No figure is judged: benchmarks are not
timed tests."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import docker
import pytest

pytestmark = [pytest.mark.docker, pytest.mark.nix]

ROOT = Path(__file__).resolve().parents[1]
BENCH = [sys.executable, "-m", "bench"]
# Every row issue 11 asks for, by the start of its name.
MEASURED = ["latency, without warm pool", "latency, with warm pool", "throughput,",
            "memory, runner RSS", "cache hit,", "API, GET", "spool, create + lease",
            "spool, list page", "memory, API RSS"]
NUMBER = re.compile(r"^\d+(\.\d+)?( x)?$")


def table_rows(table: str) -> dict[str, list[str]]:
    rows = {}
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 11 and cells[0] not in ("row", "---"):
            rows[cells[0]] = cells
    return rows


def one(rows: dict, prefix: str) -> object:
    found = [value for name, value in rows.items() if name.startswith(prefix)]
    assert len(found) == 1, f"{prefix!r}: {list(rows)}"
    return found[0]


def test_a_quick_run_prints_every_row_with_numbers_and_the_same_as_json(tmp_path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run([*BENCH, "--quick", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=1200, check=False)
    assert done.returncode == 0, done.stderr[-5000:]
    rows = table_rows(done.stdout)
    for prefix in MEASURED:
        cells = one(rows, prefix)
        # median, n of the figure and of its baseline, and their ratio
        for index in (2, 4, 6, 8, 9):
            assert NUMBER.match(cells[index]), f"{prefix}: cell {index} is {cells[index]!r}"
    assert "Breakdown of the median submission" in done.stdout
    assert "| POST sent |" in done.stdout and "| answer received |" in done.stdout

    report = json.loads(out.read_text())
    by_name = {row["row"]: row for row in report["rows"]}
    assert set(by_name) == set(rows)
    for prefix in MEASURED:
        row = one(by_name, prefix)
        assert row["figure"]["median"] > 0 and row["baseline"]["median"] > 0, row
        assert row["ratio"] == pytest.approx(row["figure"]["median"]
                                             / row["baseline"]["median"])
    segments = report["breakdown"]
    assert segments[0]["start"] == "POST sent" and segments[-1]["end"] == "answer received"
    assert all(segment["ms"] >= 0 for segment in segments)
    # The segments of the median submission add up to its latency, POST to answer.
    assert sum(segment["ms"] for segment in segments) == pytest.approx(
        report["context"]["breakdown_latency_ms"], abs=0.01)

    printed = subprocess.run([*BENCH, "--only", "spool", "--quick", "--json"], cwd=ROOT,
                             capture_output=True, text=True, timeout=600, check=False)
    assert printed.returncode == 0, printed.stderr[-3000:]
    assert [row["row"] for row in json.loads(printed.stdout)["rows"]] == [
        "spool, create + lease + report + complete, 1,000 vs 100 stored",
        "spool, list page of 50 filtered by status, 1,000 vs 100 stored",
        "memory, API RSS with 1,000 stored"]


def _processes_with(marker: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker.encode() in (entry / "environ").read_bytes():
                found.append((entry / "cmdline").read_bytes().decode(errors="replace"))
        except OSError:
            continue  # gone meanwhile, or a kernel thread
    return found


def test_ctrl_c_stops_everything_it_started() -> None:
    bench = subprocess.Popen([*BENCH, "--only", "latency", "--runs", "50"], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert bench.stderr is not None
        started = None
        for line in bench.stderr:
            started = started or re.search(r"runner (bench-\w+)\) on \S+, state in (\S+)", line)
            if "measuring latency" in line:
                break
        assert started, f"the bench never said it started serve (exit {bench.poll()})"
        bench.send_signal(signal.SIGINT)
        _, err = bench.communicate(timeout=120)
    finally:
        if bench.poll() is None:
            bench.kill()
    assert bench.returncode == 130, err[-3000:]
    runner, base = started.group(1), Path(started.group(2))
    assert not base.exists()
    assert _processes_with(f"NIXJAIL_RUNNER_NAME={runner}\0") == []
    assert docker.from_env().containers.list(
        all=True, filters={"label": f"org.nixjail.runner={runner}"}) == []
