"""Tenancy: a submitter token reaches the submissions its tenant made, an
admin token every one, and tokens never reach the spool or the log."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest
from api_helpers import ADMIN, ALICE, ALICE_TOO, BOB, BOTH, SUBMITTER, WORKER, Api

from nixjail.api.auth import derived_tenant
from nixjail.spool import Queue


def ids_listed(api: Api, token: str, query: str = "") -> list[str]:
    answer = api.get(f"/v1/submissions{query}", token=token)
    assert answer.status_code == 200, answer.text
    return [item["id"] for item in answer.json()["items"]]


def test_a_submitter_lists_reads_and_cancels_only_its_own(api: Api) -> None:
    alices = [api.submit(token=ALICE)["id"], api.submit(token=ALICE_TOO)["id"]]
    bobs = api.submit(token=BOB)["id"]
    assert ids_listed(api, ALICE) == alices[::-1]  # either token: the tenant's
    assert ids_listed(api, ALICE_TOO) == alices[::-1]
    assert ids_listed(api, BOB) == [bobs]
    assert ids_listed(api, BOB, "?status=queued") == [bobs]
    assert ids_listed(api, ALICE, "?status=done,failed") == []

    got = api.get(f"/v1/submissions/{alices[0]}", token=ALICE_TOO)
    assert got.status_code == 200
    assert got.json()["owner"] == "alice"
    summary = api.get(f"/v1/submissions/{alices[0]}?view=summary", token=ALICE).json()
    assert summary["owner"] == "alice"

    # Bob is told exactly what an unknown id tells him, waiting or not.
    unknown = "0" * 26
    for path in (f"/v1/submissions/{alices[0]}", f"/v1/submissions/{alices[0]}?wait=1",
                 f"/v1/submissions/{alices[0]}?view=summary"):
        theirs = api.get(path, token=BOB)
        nobodys = api.get(path.replace(alices[0], unknown), token=BOB)
        assert theirs.status_code == nobodys.status_code == 404, path
        assert theirs.text == nobodys.text.replace(unknown, alices[0])
        assert theirs.json()["errors"][0]["field"] == "submission_id"
    refused = api.request("DELETE", f"/v1/submissions/{alices[0]}", token=BOB)
    assert refused.status_code == 404
    assert api.spool.get(alices[0]).status == "queued"  # untouched

    cancelled = api.request("DELETE", f"/v1/submissions/{alices[0]}", token=ALICE)
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"


def test_paging_stays_within_the_tenant(api: Api) -> None:
    mine = [api.submit(token=BOB)["id"] for _ in range(5)]
    for _ in range(3):
        api.submit(token=ALICE)
    seen, cursor = [], None
    while True:
        page = api.get("/v1/submissions", token=BOB,
                       params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
        seen += [item["id"] for item in page["items"]]
        assert all(item["owner"] == "bob" for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == mine[::-1]


def test_an_admin_sees_and_cancels_every_submission(api: Api) -> None:
    alices = api.submit(token=ALICE)["id"]
    bobs = api.submit(token=BOB)["id"]
    own = api.submit(token=ADMIN)
    assert own["owner"] == "ops"
    assert ids_listed(api, ADMIN) == [own["id"], bobs, alices]
    assert ids_listed(api, ADMIN, "?status=queued") == [own["id"], bobs, alices]
    assert api.get(f"/v1/submissions/{alices}", token=ADMIN).json()["owner"] == "alice"
    answer = api.request("DELETE", f"/v1/submissions/{bobs}", token=ADMIN)
    assert answer.status_code == 200 and answer.json()["status"] == "cancelled"
    assert ids_listed(api, BOB, "?status=cancelled") == [bobs]
    assert ids_listed(api, ALICE) == [alices]  # an admin's own are its tenant's


def test_an_admin_token_does_not_lease(api: Api) -> None:
    answer = api.post("/v1/leases", json={"queue": "run", "holder": "w"}, token=ADMIN)
    assert answer.status_code == 403
    assert answer.json()["description"] == "this needs a worker token"
    answer = api.get("/v1/submissions", token=WORKER)
    assert answer.json()["description"] == "this needs a submitter or admin token"


def test_a_worker_leases_every_tenants_jobs(api: Api) -> None:
    ids = {api.submit(token=ALICE, cache=False)["id"], api.submit(token=BOB, cache=False)["id"]}
    leased = set()
    for _ in ids:
        answer = api.post("/v1/leases", json={"queue": "run", "holder": "w"}, token=WORKER)
        assert answer.status_code == 200
        leased.add(answer.json()["submission"]["id"])
    assert leased == ids


def test_a_token_without_a_tenant_is_its_own_and_never_stored(api: Api) -> None:
    made = api.submit(token=SUBMITTER)
    other = api.submit(token=BOTH)
    assert made["owner"] == derived_tenant(SUBMITTER)
    assert made["owner"].startswith("token-") and SUBMITTER not in made["owner"]
    assert other["owner"] == derived_tenant(BOTH) != made["owner"]
    assert ids_listed(api, SUBMITTER) == [made["id"]]
    assert api.get(f"/v1/submissions/{other['id']}", token=SUBMITTER).status_code == 404
    # Neither the token nor a part of it is anywhere in the spool.
    for path in Path(api.settings.spool_dir).rglob("*"):
        for token in (SUBMITTER, BOTH):
            assert token.encode() not in path.name.encode(), path
            if path.is_file():
                assert token.encode() not in path.read_bytes(), path


def test_renaming_a_tokens_tenant_moves_it_and_rotating_keeps_it(api: Api) -> None:
    tokens_file = api.settings.api.tokens_file
    assert tokens_file is not None
    made = api.submit(token=ALICE)["id"]
    # A new token for alice, the old one revoked: her submissions stay hers.
    tokens_file.write_text(tokens_file.read_text().replace(ALICE, "alice-token-3"))
    later = time.time() + 5
    os.utime(tokens_file, (later, later))
    assert api.get("/v1/submissions", token=ALICE).status_code == 401
    assert ids_listed(api, "alice-token-3") == [made]


def test_lines_that_would_confuse_tenants_are_ignored_and_the_log_holds_no_token(
        make_api, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    api = make_api()
    tokens_file = api.settings.api.tokens_file
    assert tokens_file is not None
    secrets = ["s3cret-typo-role", "s3cret-bad-tenant", "s3cret-two-tenants", "s3cret-dot"]
    tokens_file.write_text(f"""\
submiter {secrets[0]} alice
submitter {secrets[1]} ../bob
submitter {secrets[2]} carol
admin {secrets[2]} dave
submitter {secrets[3]} .hidden
submitter {secrets[0]} alice extra
""")
    later = time.time() + 5
    os.utime(tokens_file, (later, later))
    with caplog.at_level(logging.DEBUG):
        for token in secrets:
            api.get("/v1/submissions", token=token)
        api.get("/v1/submissions", token="s3cret-unknown")
    # The line naming a second tenant is dropped: the token is carol's, no admin.
    assert api.get("/v1/submissions", token=secrets[2]).status_code == 200
    made = api.submit(token=secrets[2])
    assert made["owner"] == "carol"
    for token in (secrets[0], secrets[1], secrets[3]):
        assert api.get("/v1/submissions", token=token).status_code == 401
    assert ids_listed(api, secrets[2]) == [made["id"]]
    messages = [record.getMessage() for record in caplog.records]
    assert len([m for m in messages if "line ignored" in m]) == 5, messages
    assert any(":4: this token has tenant carol (line 3)" in m for m in messages), messages
    for message in messages:
        assert "s3cret" not in message, message


def test_without_a_tokens_file_there_is_one_tenant(make_api) -> None:
    api = make_api(auth=False)
    first = api.submit(token=None)
    second = api.submit(token="anything")
    assert first["owner"] is None
    assert ids_listed(api, None) == [second["id"], first["id"]]  # type: ignore[arg-type]
    assert api.get(f"/v1/submissions/{first['id']}", token=None).status_code == 200
    assert api.request("DELETE", f"/v1/submissions/{second['id']}",
                       token=None).status_code == 200


def test_a_queue_lease_finishes_an_owned_submission_for_its_owner(api: Api) -> None:
    made = api.submit(token=BOB)["id"]
    api.finish(made)
    answer = api.get(f"/v1/submissions/{made}?wait=5", token=BOB)
    assert answer.status_code == 200 and answer.json()["status"] == "done"
    assert ids_listed(api, BOB, "?status=done") == [made]
    assert ids_listed(api, ALICE, "?status=done") == []
    assert api.spool.queued(Queue.run) == []
