"""The outcome of every attack case of the last run, and the table of
docs/security.md made from them.

`test_attacks.py` appends one JSON line per case to NIXJAIL_HOSTILE_RESULTS
(default /tmp/nixjail-hostile.jsonl). `python tests/hostile/report.py
[--write]` prints the table of each attack's last outcome, or writes it into
docs/security.md between the two table marks."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

RESULTS_ENV = "NIXJAIL_HOSTILE_RESULTS"
DEFAULT_RESULTS = Path("/tmp/nixjail-hostile.jsonl")
DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"
BEGIN = "<!-- attacks table: written by tests/hostile/report.py -->"
END = "<!-- end of the attacks table -->"


def results_path() -> Path:
    return Path(os.environ.get(RESULTS_ENV) or DEFAULT_RESULTS)


def record(name: str, spec: dict, cache: bool, observed: str, problems: list[str],
           seconds: dict[str, float]) -> None:
    line = {"name": name, "cache": cache,
            "attack": spec.get("attack", ""), "class": spec.get("class", ""),
            "where": spec.get("where", ""), "expected": spec.get("outcome", ""),
            "observed": observed, "passed": not problems,
            "problems": [problem[:400] for problem in problems],
            "seconds": {part: round(value, 1) for part, value in seconds.items()},
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with open(results_path(), "a") as handle:
        handle.write(json.dumps(line) + "\n")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(path: Path) -> str:
    """One row per attack directory: its last outcome with each value of cache."""
    last: dict[tuple[str, bool], dict] = {}
    for line in path.read_text().splitlines():
        case = json.loads(line)
        last[(case["name"], case["cache"])] = case
    names = sorted({name for name, _ in last})
    rows = ["| attack | class | where | expected | last run |",
            "| --- | --- | --- | --- | --- |"]
    for name in names:
        cases = [last[key] for key in ((name, True), (name, False)) if key in last]
        first = cases[0]
        runs = []
        for case in cases:
            label = "cache" if case["cache"] else "no cache"
            verdict = "holds" if case["passed"] else \
                "**fails**: " + "; ".join(case["problems"])[:300]
            runs.append(f"{label}: {case['observed']}, {verdict}")
        rows.append(f"| `{name}`: {_cell(first['attack'])} | {_cell(first['class'])} | "
                    f"{_cell(first['where'])} | {_cell(first['expected'])} | "
                    f"{_cell('<br>'.join(runs))} |")
    return "\n".join(rows)


def write(doc: Path, text: str) -> None:
    body = doc.read_text()
    if BEGIN not in body or END not in body:
        raise SystemExit(f"{doc} lacks the table marks {BEGIN!r} and {END!r}")
    head, rest = body.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


if __name__ == "__main__":
    made = table(results_path())
    if "--write" in sys.argv[1:]:
        write(DOC, made)
    else:
        print(made)
