"""The worker endpoints: lease, renew, report, complete, release over HTTP."""

from __future__ import annotations

import threading
import time

from api_helpers import WORKER, Api, sample_request

from nixjail.spool import Queue


def lease(api: Api, queue: str, wait_s: float = 0) -> dict:
    answer = api.post("/v1/leases", json={"queue": queue, "holder": "test-worker",
                                          "wait_s": wait_s}, token=WORKER)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_full_flow_dependencies_then_run(api: Api) -> None:
    created = api.submit(limits={"run": {"memory_mib": 100}})
    grant = lease(api, "dependencies")
    assert grant["lease"]["submission_id"] == created["id"]
    assert grant["lease"]["queue"] == "dependencies"
    assert grant["lease"]["holder"] == "test-worker"
    assert grant["submission"]["status"] == "building"
    assert grant["submission"]["attempts"] == 1
    # The request's own limit, server defaults for the rest, fixed when accepted.
    limits = grant["submission"]["limits"]
    assert created["limits"] == limits
    assert limits["run"]["memory_mib"] == 100
    assert limits["run"]["wall_time_s"] == api.settings.limits_default.run.wall_time_s
    assert limits["compile"] == api.settings.limits_default.compile.model_dump()

    token, sid = grant["lease"]["token"], created["id"]
    renewed = api.post(f"/v1/leases/{sid}/renew", json={"token": token}, token=WORKER)
    assert renewed.status_code == 200
    assert renewed.json()["lease"]["deadline"] >= grant["lease"]["deadline"]

    report = api.request("PUT", f"/v1/leases/{sid}/stages/dependencies", token=WORKER,
                         json={"token": token, "result": {"status": "ok", "cached": False,
                                                          "wall_time_ms": 1200}})
    assert report.status_code == 200, report.text
    assert report.json()["stages"]["dependencies"]["wall_time_ms"] == 1200

    kicks_before = len(api.kicks)
    done = api.post(f"/v1/leases/{sid}/complete", json={"token": token, "error": None},
                    token=WORKER)
    assert done.status_code == 200
    assert done.json()["status"] == "queued"
    assert api.spool.queued(Queue.run) == [sid]
    assert len(api.kicks) > kicks_before, "the runner was not kicked for the run job"

    grant = lease(api, "run")
    token = grant["lease"]["token"]
    for stage, result in (("compile", {"status": "ok"}),
                          ("run", {"status": "nonzero_exit", "exit_code": 3, "stdout": "x"})):
        answer = api.request("PUT", f"/v1/leases/{sid}/stages/{stage}", token=WORKER,
                             json={"token": token, "result": result})
        assert answer.status_code == 200
    done = api.post(f"/v1/leases/{sid}/complete", json={"token": token}, token=WORKER)
    assert done.status_code == 200
    body = done.json()
    assert body["status"] == "done"
    assert body["stages"]["run"]["exit_code"] == 3
    assert api.get(f"/v1/submissions/{sid}").json() == body


def test_complete_with_error_ends_the_submission_as_error(api: Api) -> None:
    created = api.submit(cache=False)
    grant = lease(api, "run")
    answer = api.post(f"/v1/leases/{created['id']}/complete",
                      json={"token": grant["lease"]["token"], "error": "docker is gone"},
                      token=WORKER)
    assert answer.status_code == 200
    assert answer.json()["status"] == "error"
    assert answer.json()["error"] == "docker is gone"


def test_no_job_answers_204_after_wait_s(api: Api) -> None:
    started = time.monotonic()
    answer = api.post("/v1/leases", json={"queue": "run", "holder": "w", "wait_s": 0.3},
                      token=WORKER)
    assert answer.status_code == 204
    assert answer.content == b""
    assert 0.25 <= time.monotonic() - started < 3


def test_lease_long_poll_gets_a_job_created_meanwhile(api: Api) -> None:
    def submit_later() -> None:
        time.sleep(0.3)
        api.submit(cache=False)

    thread = threading.Thread(target=submit_later)
    thread.start()
    grant = lease(api, "run", wait_s=5)
    thread.join()
    assert grant["submission"]["status"] == "running"


def test_renew_after_expiry_is_409_lease_lost(api: Api) -> None:
    created = api.submit()
    grant = lease(api, "dependencies")
    # The expiry timer runs as if far in the future: the lease is past its deadline.
    assert api.spool.expire_leases(now=time.time() + 3600) == [created["id"]]
    token = grant["lease"]["token"]
    for path, body in ((f"/v1/leases/{created['id']}/renew", {"token": token}),
                       (f"/v1/leases/{created['id']}/complete", {"token": token})):
        answer = api.post(path, json=body, token=WORKER)
        assert answer.status_code == 409, answer.text
        assert answer.json()["title"] == "lease lost"
    answer = api.request("PUT", f"/v1/leases/{created['id']}/stages/compile", token=WORKER,
                         json={"token": token, "result": {"status": "ok"}})
    assert answer.status_code == 409
    # It went back to its queue, and a new lease works.
    assert lease(api, "dependencies")["submission"]["attempts"] == 2


def test_wrong_token_and_unknown_lease_are_409(api: Api) -> None:
    created = api.submit()
    lease(api, "dependencies")
    for sid, token in ((created["id"], "not-the-token"), ("0" * 26, "x"), ("bad-id", "x")):
        answer = api.post(f"/v1/leases/{sid}/renew", json={"token": token}, token=WORKER)
        assert answer.status_code == 409
        assert answer.json()["title"] == "lease lost"


def test_renew_of_a_cancelled_submission_is_409(api: Api) -> None:
    created = api.submit()
    grant = lease(api, "dependencies")
    api.request("DELETE", f"/v1/submissions/{created['id']}")
    answer = api.post(f"/v1/leases/{created['id']}/renew",
                      json={"token": grant["lease"]["token"]}, token=WORKER)
    assert answer.status_code == 409
    assert answer.json()["title"] == "lease lost"


def test_release_requeues_and_counts_the_attempt(api: Api) -> None:
    created = api.submit()
    grant = lease(api, "dependencies")
    answer = api.post(f"/v1/leases/{created['id']}/release",
                      json={"token": grant["lease"]["token"], "reason": "shutting down"},
                      token=WORKER)
    assert answer.status_code == 200
    assert answer.json()["status"] == "queued"
    assert answer.json()["attempts"] == 1
    assert api.spool.queued(Queue.dependencies) == [created["id"]]


def test_unknown_stage_is_400_naming_the_parameter(api: Api) -> None:
    created = api.submit()
    grant = lease(api, "dependencies")
    answer = api.request("PUT", f"/v1/leases/{created['id']}/stages/link", token=WORKER,
                         json={"token": grant["lease"]["token"], "result": {"status": "ok"}})
    assert answer.status_code == 400
    assert answer.json()["errors"][0]["field"] == "stage"


def test_bad_lease_bodies_name_their_fields(api: Api) -> None:
    cases = [
        ({"queue": "build", "holder": "w"}, "queue"),
        ({"queue": "run"}, "holder"),
        ({"queue": "run", "holder": "w", "wait_s": -1}, "wait_s"),
        ({"queue": "run", "holder": "w\u0000x"}, "holder"),
        ({"queue": "run", "holder": "w", "extra": 1}, "extra"),
    ]
    for body, field in cases:
        answer = api.post("/v1/leases", json=body, token=WORKER)
        assert answer.status_code == 422, body
        assert [e["field"] for e in answer.json()["errors"]] == [field], answer.text
    sid = api.submit()["id"]
    answer = api.request("PUT", f"/v1/leases/{sid}/stages/run", token=WORKER,
                         json={"token": "t", "result": {"status": "exploded"}})
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["field"] == "result.status"
    answer = api.post(f"/v1/leases/{sid}/release", json={"token": "t"}, token=WORKER)
    assert answer.json()["errors"][0]["field"] == "reason"


def test_sample_request_is_valid(api: Api) -> None:
    assert api.settings.validate_request(sample_request()).run_sh == "sh main.sh"


def test_a_dependencies_lease_cannot_report_the_run_stage(api: Api) -> None:
    created = api.submit()
    grant = lease(api, "dependencies")
    answer = api.request("PUT", f"/v1/leases/{created['id']}/stages/run", token=WORKER,
                         json={"token": grant["lease"]["token"], "result": {"status": "ok"}})
    assert answer.status_code == 400, answer.text
    assert answer.json()["errors"] == [
        {"field": "stage", "reason": "a dependencies job reports the dependencies stage only"}]
    assert api.get(f"/v1/submissions/{created['id']}").json()["stages"]["run"] is None
