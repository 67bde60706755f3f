"""Every attack under `attacks/`, through the API, against one real stack.

An attack is a directory: the submission (`attack.json` with its limits,
stdin and cache choices, and beside it `shell.nix`, `compile.sh`, `run.sh`,
`stdin`, `files/`) and its expected outcome (`expect` in `attack.json`, see
`attack_cases.py`). Each runs once per entry of its `cache` list on one
`nixjail serve` (real dockerd, nix, nsjail, the runner image). After each:
the outcome is judged, `aftermath.py` checks that nothing of it is left and
the host is back, and a benign submission runs as ever. Every case's outcome
is recorded for `report.py`, which writes the table of docs/security.md.

The cases run in LANES lanes at once (the stack runs two submissions at
once), each lane one case after another; what a case leaves is told apart
by its submission id and nonce (see aftermath.py). The first test to ask
for its outcome waits for all selected cases; each test then judges its own.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from aftermath import Snapshot
from attack_cases import Attack, all_attacks, judge, observed
from report import record
from serve_stack import Served, serving, stage_stdout

pytestmark = [pytest.mark.docker, pytest.mark.nix]

LANES = 2
SETTINGS = "[cache_builder]\nenabled = true\n[runner]\nconcurrency = 2\n"
# Every cache: true case first, then every cache: false one, so that the two
# cases of one attack never run side by side (what one leaves host-wide, such
# as disk, would be counted against the other).
CASES = {f"{attack.name}-{'cache' if cache else 'no-cache'}": (attack, cache)
         for cache in (True, False) for attack in all_attacks() if cache in attack.caches}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    for stack in serving(tmp_path_factory.mktemp("hostile"), settings_toml=SETTINGS):
        # The benign environment built once, before any attack is measured.
        warm = stack.api.submit(run_sh="echo warm")
        assert warm["status"] == "done", warm
        yield stack


def _marks(served: Served, nonce: str) -> dict[str, str]:
    cmdline = Path("/proc/cmdline").read_text().strip()
    return {"@NONCE@": nonce, "@API_PORT@": served.api.url.rsplit(":", 1)[1],
            "@STATE_DIR@": str(served.base / "state"), "@RUN_DIR@": str(served.run_dir),
            "@HOST_BOOT_ID@": Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
            # A stretch of the host's kernel command line no jail file holds by chance.
            "@HOST_CMDLINE@": cmdline[:40] if len(cmdline) >= 8 else f"no cmdline {nonce}"}


def _benign_runs(served: Served, cache: bool) -> list[str]:
    word = f"benign-{uuid.uuid4().hex[:8]}"
    ended = served.api.submit(run_sh=f"echo {word}", cache=cache)
    if ended["status"] != "done" or stage_stdout(ended) != f"{word}\n":
        return [f"the benign submission after it ended {ended['status']} with "
                f"{json.dumps(ended['stages'])[:600]} (error: {ended.get('error')})"]
    return []


def run_case(served: Served, attack: Attack, cache: bool) -> list[str]:
    """The case's problems: its outcome against `expect`, what it left, and
    whether the next submission ran."""
    nonce = uuid.uuid4().hex
    marks = _marks(served, nonce)
    victim = attack.victim(cache=cache, marks=marks)
    if victim is not None:
        ended = served.api.submit(**victim)
        if ended["status"] != "done":
            return [f"its victim ended {ended['status']}: {json.dumps(ended)[:600]}"]
    body = attack.request(cache=cache, marks=marks)
    before = Snapshot.take(served, nonce)
    started = time.monotonic()
    status, answer = served.api.request("POST", "/v1/submissions", body)
    submission_id = answer["id"] if status in (200, 202) else None
    if submission_id is not None:
        submission = served.api.wait(submission_id, attack.wait_s)
    else:
        submission = {"http_status": status, "body": answer}
    elapsed = time.monotonic() - started
    problems = judge(attack.expect(cache=cache, marks=marks), submission)
    problems += before.left_behind(served, submission_id)
    settled = time.monotonic() - started - elapsed
    problems += _benign_runs(served, cache)
    record(attack.name, attack.spec, cache, observed(submission), problems,
           {"attack": elapsed, "aftermath": settled,
            "benign": time.monotonic() - started - elapsed - settled})
    return problems


@pytest.fixture(scope="module")
def outcomes(served: Served, request: pytest.FixtureRequest) -> dict[str, list[str]]:
    """Every selected case run, LANES at once: case id → its problems."""
    selected = [item.callspec.id for item in request.session.items
                if getattr(item, "originalname", None) == "test_attack"
                and item.module is request.module]

    def guarded(case: str) -> list[str]:
        try:
            return run_case(served, *CASES[case])
        except Exception as exc:  # reported by its own test, not the whole module's
            return [f"the case failed to run: {exc!r}"]

    # An attack whose leftovers would be host-wide (disk, the host's /tmp)
    # runs alone, after the others, so that they are told apart.
    alone = [case for case in selected if CASES[case][0].spec.get("alone")]
    side_by_side = [case for case in selected if case not in alone]
    with ThreadPoolExecutor(max_workers=LANES) as lanes:
        found = dict(zip(side_by_side, lanes.map(guarded, side_by_side), strict=True))
    return found | {case: guarded(case) for case in alone}


def _param(case: str) -> object:
    """A case, marked as a strict xfail while its attack's hole is open:
    `open` in attack.json gives the reason and the cache values it holds for,
    so the mark fails the suite the day the hole closes."""
    attack, cache = CASES[case]
    hole = attack.spec.get("open")
    if hole and cache in hole.get("cache", [True, False]):
        return pytest.param(case, marks=pytest.mark.xfail(strict=True, reason=hole["reason"]))
    return case


@pytest.mark.parametrize("case", [_param(case) for case in CASES])
def test_attack(outcomes: dict[str, list[str]], case: str) -> None:
    problems = outcomes[case]
    assert not problems, f"{case}:\n" + "\n".join(problems)
