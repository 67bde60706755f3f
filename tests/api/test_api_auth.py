"""Bearer tokens with roles from the tokens file."""

from __future__ import annotations

import os
import time

import pytest
from api_helpers import BOTH, SUBMITTER, WORKER, Api, sample_request

from nixjail.spool import Queue

LEASE = {"queue": "run", "holder": "w"}


def test_no_token_or_an_unknown_one_is_401_with_a_challenge(api: Api) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic dTpw"},
                    {"Authorization": "Bearer"}, {"Authorization": f"Bearer {SUBMITTER}x"}):
        answer = api.get("/v1/submissions", token=None, headers=headers)
        assert answer.status_code == 401, headers
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
        assert answer.json()["title"] == "unauthorized"
    answer = api.post("/v1/leases", json=LEASE, token=None)
    assert answer.status_code == 401


def test_wrong_role_is_403(api: Api) -> None:
    answer = api.post("/v1/submissions", json=sample_request(), token=WORKER)
    assert answer.status_code == 403
    assert answer.json()["title"] == "forbidden"
    assert api.get("/v1/submissions", token=WORKER).status_code == 403
    assert api.post("/v1/leases", json=LEASE, token=SUBMITTER).status_code == 403
    assert api.post("/v1/leases/x/renew", json={"token": "t"},
                    token=SUBMITTER).status_code == 403


def test_right_roles_pass(api: Api) -> None:
    assert api.post("/v1/submissions", json=sample_request(), token=SUBMITTER).status_code == 202
    assert api.get("/v1/submissions", token=SUBMITTER).status_code == 200
    assert api.post("/v1/leases", json=LEASE, token=WORKER).status_code == 204
    assert api.post("/v1/leases", json=LEASE, token=BOTH).status_code == 204
    assert api.get("/v1/submissions", token=BOTH,
                   headers={"Authorization": f"bearer  {BOTH}"}).status_code == 200


def test_open_endpoints_need_no_token(api: Api) -> None:
    for path in ("/healthz", "/metrics", "/v1/openapi.json"):
        assert api.get(path, token=None).status_code == 200, path


def test_the_tokens_file_is_reread_when_it_changes(api: Api) -> None:
    tokens_file = api.settings.api.tokens_file
    assert tokens_file is not None
    assert api.get("/v1/submissions", token="fresh-token").status_code == 401
    tokens_file.write_text("# rotated\nsubmitter fresh-token\nbogus line here\nadmin x\n")
    later = time.time() + 5  # a distinct mtime even on coarse clocks
    os.utime(tokens_file, (later, later))
    assert api.get("/v1/submissions", token="fresh-token").status_code == 200
    assert api.get("/v1/submissions", token=SUBMITTER).status_code == 401


def test_a_missing_tokens_file_locks_everything(api: Api) -> None:
    assert api.settings.api.tokens_file is not None
    api.settings.api.tokens_file.unlink()
    assert api.get("/v1/submissions", token=SUBMITTER).status_code == 401
    assert api.get("/healthz", token=None).status_code == 200


@pytest.mark.parametrize("token", [None, "anything"])
def test_without_a_tokens_file_auth_is_off(make_api, token: str | None) -> None:
    api = make_api(auth=False)
    assert api.post("/v1/submissions", json=sample_request(), token=token).status_code == 202
    assert api.get("/v1/submissions", token=token).status_code == 200


@pytest.mark.parametrize("token", [None, "anything", WORKER])
def test_without_a_tokens_file_every_lease_endpoint_is_refused(make_api,
                                                               token: str | None) -> None:
    api = make_api(auth=False)
    created = api.submit()
    lease = {"queue": "dependencies", "holder": "w"}
    for path, body in (("/v1/leases", lease),
                       (f"/v1/leases/{created['id']}/renew", {"token": "t"}),
                       (f"/v1/leases/{created['id']}/complete", {"token": "t"}),
                       (f"/v1/leases/{created['id']}/release", {"token": "t", "reason": "x"})):
        answer = api.post(path, json=body, token=token)
        assert answer.status_code == 403, path
        assert answer.json()["errors"][0]["field"] == "Authorization"
    answer = api.request("PUT", f"/v1/leases/{created['id']}/stages/run", token=token,
                         json={"token": "t", "result": {"status": "ok"}})
    assert answer.status_code == 403
    # Nothing was leased: the job still waits for this host's own services.
    assert api.spool.queued(Queue.dependencies) == [created["id"]]
    assert api.spool.get(created["id"]).status == "queued"
