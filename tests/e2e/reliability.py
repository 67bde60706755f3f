"""What the fault and load tests measure, the same way each time: which
submissions were acknowledged, how each ended, which program runs finished
(from dockerd's own events), and how long recovery took. Each test records
its figures as one JSON line (docs/reliability.md is made from them)."""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import docker

from nixjail.docker import LABEL_RUNNER, LABEL_SUBMISSION

FIGURES_ENV = "NIXJAIL_RELIABILITY_FIGURES"
DEFAULT_FIGURES = Path("/tmp/nixjail-reliability.jsonl")



def submission_of(container_name: str) -> str:
    """The submission a container ran, by its name (nixjail-ID-ATTEMPT): a
    warm pool's container, taken by a submission, has no submission label."""
    parts = container_name.split("-")
    return parts[1] if len(parts) == 3 and parts[0] == "nixjail" else "?"

class FinishedRuns:
    """Containers of one runner that ended with container init's own success
    (exit 0): each is one whole run of a submission. A submission with two
    was run twice."""

    def __init__(self, runner_name: str, docker_host: str | None = None) -> None:
        env = {"DOCKER_HOST": docker_host} if docker_host else None
        self.client = docker.from_env(environment=env) if env else docker.from_env()
        self.counts: Counter[str] = Counter()
        self._since = int(time.time()) - 1
        self._events = self.client.events(
            decode=True, since=self._since,
            filters={"label": f"{LABEL_RUNNER}={runner_name}", "event": "die"})
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for event in self._events:
                attributes = event.get("Actor", {}).get("Attributes", {})
                if attributes.get("exitCode") == "0":
                    self.counts[attributes.get(LABEL_SUBMISSION)
                                or submission_of(attributes.get("name", ""))] += 1
        except Exception:  # the stream closed
            return

    def close(self) -> None:
        self._events.close()

    def twice(self) -> list[str]:
        return sorted(sid for sid, count in self.counts.items() if count > 1)


@dataclass
class Figures:
    scenario: str
    acknowledged: int = 0
    finished: int = 0
    lost: int = 0
    run_twice: int = 0
    recovery_s: float | None = None
    extra: dict = field(default_factory=dict)

    def record(self) -> None:
        path = Path(os.environ.get(FIGURES_ENV) or DEFAULT_FIGURES)
        line = json.dumps({"scenario": self.scenario, "acknowledged": self.acknowledged,
                           "finished": self.finished, "lost": self.lost,
                           "run_twice": self.run_twice,
                           "recovery_s": None if self.recovery_s is None
                           else round(self.recovery_s, 2),
                           **self.extra, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                             time.gmtime())})
        with open(path, "a") as handle:
            handle.write(line + "\n")


def table(path: Path = DEFAULT_FIGURES) -> str:
    """The last figures of each scenario as a Markdown table (docs/reliability.md)."""
    last: dict[str, dict] = {}
    for line in path.read_text().splitlines():
        figures = json.loads(line)
        last[figures["scenario"]] = figures
    rows = ["| scenario | acknowledged | finished | lost | run twice | recovery | also |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    known = {"scenario", "acknowledged", "finished", "lost", "run_twice", "recovery_s", "at"}
    for figures in last.values():
        recovery = "" if figures["recovery_s"] is None else f"{figures['recovery_s']} s"
        also = ", ".join(f"{k}: {v}" for k, v in figures.items() if k not in known)
        rows.append(f"| {figures['scenario']} | {figures['acknowledged']} | "
                    f"{figures['finished']} | {figures['lost']} | {figures['run_twice']} | "
                    f"{recovery} | {also} |")
    return "\n".join(rows)


if __name__ == "__main__":
    import sys

    print(table(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_FIGURES))
