"""A submitter with a token of its own goes after another tenant's
submission: lists, reads, long-polls, cancels and probes its id.

`nixjail serve` with a tokens file, as a host shared by several submitters
runs it: each token owns the submissions it made; another's answers 404,
exactly as an id nobody has."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from e2e_stack import Stack, containers_left
from serve_stack import SHELL_NIX, Served, serving, stage_stdout

pytestmark = [pytest.mark.docker, pytest.mark.nix]

ALICE, BOB, OPS = "alice-s3cret-token", "bob-s3cret-token", "ops-s3cret-token"
TOKENS = f"submitter {ALICE} alice\nsubmitter {BOB} bob\nadmin {OPS} ops\n"
SECRETS = ("alice's secret file", "alice's secret stdin", "alice's run script")


def test_a_submitter_cannot_reach_another_tenants_submission(tmp_path: Path) -> None:
    (tmp_path / "tokens").write_text(TOKENS)
    settings = f'[api]\ntokens_file = "{tmp_path / "tokens"}"\n'
    for served in serving(tmp_path, settings_toml=settings):
        attack(served)


def attack(served: Served) -> None:
    def as_(token: str) -> Stack:
        return Stack(base=served.base, url=served.api.url, settings_file=served.base,
                     token=token)

    alice, bob, ops = as_(ALICE), as_(BOB), as_(OPS)
    status, made = alice.request("POST", "/v1/submissions", {
        "shell_nix": SHELL_NIX, "files": {"secret.txt": SECRETS[0]},
        "stdin": SECRETS[1], "run_sh": f"busybox sleep 2; echo {SECRETS[2]!r}"})
    assert status == 202, made
    victim, unknown = made["id"], "0" * 26
    seen_by_bob = []

    def ask(method: str, path: str) -> tuple[int, dict]:
        answer = bob.request(method, path)
        seen_by_bob.append(json.dumps(answer[1]))
        return answer

    status, page = ask("GET", "/v1/submissions?limit=200")
    assert status == 200 and page["items"] == [], page
    status, page = ask("GET", "/v1/submissions?status=queued,building,running,done")
    assert status == 200 and page["items"] == [], page
    for query in ("", "?wait=1", "?view=summary"):
        theirs = ask("GET", f"/v1/submissions/{victim}{query}")
        nobodys = ask("GET", f"/v1/submissions/{unknown}{query}")
        assert theirs[0] == nobodys[0] == 404, theirs
        assert json.dumps(theirs[1]) == json.dumps(nobodys[1]).replace(unknown, victim)
    theirs = ask("DELETE", f"/v1/submissions/{victim}")
    nobodys = ask("DELETE", f"/v1/submissions/{unknown}")
    assert theirs[0] == nobodys[0] == 404, theirs
    assert json.dumps(theirs[1]) == json.dumps(nobodys[1]).replace(unknown, victim)

    ended = alice.wait(victim, 90)
    assert ended["status"] == "done", ended  # Bob's cancel did nothing
    assert ended["owner"] == "alice"
    assert stage_stdout(ended) == SECRETS[2] + "\n"
    for answer in seen_by_bob:
        assert not any(secret in answer for secret in SECRETS), answer
    # An admin sees every tenant's.
    status, seen = ops.request("GET", f"/v1/submissions/{victim}")
    assert status == 200 and seen["owner"] == "alice"
    # No token reached serve's log, nor the spool.
    log = served.log
    state = served.base / "state"
    for token in (ALICE, BOB, OPS):
        assert token not in log
        assert not any(token.encode() in path.read_bytes()
                       for path in state.rglob("*") if path.is_file())
    # Bob's own submission runs as ever, and is his alone.
    benign = bob.submit(run_sh="echo ok")
    assert benign["status"] == "done" and stage_stdout(benign) == "ok\n", benign
    status, page = bob.request("GET", "/v1/submissions")
    assert [item["id"] for item in page["items"]] == [benign["id"]]
    assert not containers_left(served.runner_name)
