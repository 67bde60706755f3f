"""`nixjail list` against a real `nixjail api` subprocess."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

from cli_harness import Api, ToyWorker, as_json, nixjail, start_api, stop_api

from nixjail.client import Client
from nixjail.models import SubmissionRequest

REQUEST = SubmissionRequest(shell_nix="{}: {}", run_sh="echo hi")
LINE = re.compile(r"^(?P<id>[0-9a-f]{26})  (?P<status>[a-z]+) *  "
                  r"(?P<created>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)  (?P<summary>.+)$")


def submit(api: Api, count: int) -> list[str]:
    """`count` queued submissions, oldest first."""
    client = Client(api.url)
    return [client.submit(REQUEST).id for _ in range(count)]


def parsed(stdout: str) -> list[dict[str, str]]:
    lines = [LINE.match(line) for line in stdout.splitlines()]
    assert all(lines), stdout
    return [match.groupdict() for match in lines if match]


def test_one_line_each_newest_first(api: Api) -> None:
    ids = submit(api, 3)
    done = nixjail("list", "--api", api.url)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    rows = parsed(done.stdout)
    assert [row["id"] for row in rows] == ids[::-1]
    assert {(row["status"], row["summary"]) for row in rows} == {("queued", "-")}
    created = api.spool.get(ids[0]).created_at
    assert rows[-1]["created"] == created.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_limit_and_the_cursor_to_go_on(api: Api) -> None:
    ids = submit(api, 5)
    first = nixjail("list", "--api", api.url, "--limit", "2")
    assert first.returncode == 0
    assert [row["id"] for row in parsed(first.stdout)] == ids[:2:-1]
    assert first.stderr == f"nixjail: more submissions: nixjail list --cursor {ids[3]}\n"
    rest = nixjail("list", "--api", api.url, "--cursor", ids[3])
    assert [row["id"] for row in parsed(rest.stdout)] == ids[2::-1]
    assert rest.stderr == ""


def test_all_pages_through_every_api_page(api: Api) -> None:
    # More than the API's largest page (200), so the cursor must be followed.
    ids = submit(api, 203)
    done = nixjail("list", "--api", api.url, "--all")
    assert done.returncode == 0, done.stderr
    assert [row["id"] for row in parsed(done.stdout)] == ids[::-1]
    assert done.stderr == ""
    some = nixjail("list", "--api", api.url, "--limit", "201", "--json")
    page = as_json(some.stdout)
    assert [item["id"] for item in page["items"]] == ids[:1:-1]
    assert page["next_cursor"] == ids[2]


def test_status_filter_and_summaries(api: Api) -> None:
    worker = ToyWorker(api.spool)
    worker.start()
    [finished] = submit(api, 1)
    worker.finish()
    [cancelled, waiting] = submit(api, 2)
    assert nixjail("cancel", cancelled, "--api", api.url).returncode == 0
    done = nixjail("list", "--api", api.url, "--status", "done")
    rows = parsed(done.stdout)
    assert [(row["id"], row["status"]) for row in rows] == [(finished, "done")]
    assert re.fullmatch(r"run: ok \(\d+ ms\)", rows[0]["summary"])
    both = nixjail("list", "--api", api.url, "--status", "done,cancelled")
    assert [(row["id"], row["status"], row["summary"]) for row in parsed(both.stdout)] == [
        (cancelled, "cancelled", "before any stage ran"), (finished, "done", rows[0]["summary"])]
    repeated = nixjail("list", "--api", api.url, "--status", "queued", "--status", "done")
    assert [row["id"] for row in parsed(repeated.stdout)] == [waiting, finished]


def test_json_is_the_api_page_shape(api: Api) -> None:
    ids = submit(api, 2)
    done = nixjail("list", "--api", api.url, "--json", "--limit", "1")
    assert done.returncode == 0
    page = as_json(done.stdout)
    assert set(page) == {"items", "next_cursor"}
    assert [item["id"] for item in page["items"]] == [ids[1]]
    assert page["next_cursor"] == ids[1]
    assert done.stderr == ""
    # the items as the API gives them, whichever view that is
    with urllib.request.urlopen(f"{api.url}/v1/submissions?limit=1") as answer:
        assert page == json.load(answer)


def test_list_status_and_cancel_act_for_the_tokens_tenant(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("submitter alice-s3cret alice\nsubmitter bob-s3cret bob\n"
                      "admin ops-s3cret ops\n")
    api = start_api(tmp_path, api_extra=f'tokens_file = "{tokens}"')
    try:
        alices = [Client(api.url, "alice-s3cret").submit(REQUEST).id for _ in range(2)]
        bobs = Client(api.url, "bob-s3cret").submit(REQUEST).id
        as_bob = ("--api", api.url, "--token", "bob-s3cret")
        listed = nixjail("list", *as_bob)
        assert listed.returncode == 0, listed.stderr
        assert [row["id"] for row in parsed(listed.stdout)] == [bobs]
        (tmp_path / "alice-token").write_text("alice-s3cret\n")
        as_alice = ("--api", api.url, "--token-file", str(tmp_path / "alice-token"))
        listed = nixjail("list", *as_alice, "--json")
        assert [item["id"] for item in as_json(listed.stdout)["items"]] == alices[::-1]
        assert {item["owner"] for item in as_json(listed.stdout)["items"]} == {"alice"}
        # Another's submission is unknown to bob's token, as any unknown id.
        for command in ("status", "cancel"):
            refused = nixjail(command, alices[0], *as_bob)
            assert refused.returncode == 64, refused.stderr
            assert refused.stderr == (f"nixjail: not found (HTTP 404): submission_id: "
                                      f"no submission '{alices[0]}'\n")
        assert nixjail("status", alices[0], *as_alice).returncode == 75  # queued
        cancelled = nixjail("cancel", alices[0], *as_alice)
        assert cancelled.returncode == 0, cancelled.stderr
        assert cancelled.stdout == f"{alices[0]} cancelled (was queued)\n"
        everyone = nixjail("list", "--api", api.url, "--token", "ops-s3cret")
        assert [row["id"] for row in parsed(everyone.stdout)] == [bobs, *alices[::-1]]
    finally:
        stop_api(api)
