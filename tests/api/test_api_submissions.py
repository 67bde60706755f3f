"""Submitting, looking up, long-polling, listing and cancelling over HTTP."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from api_helpers import Api, sample_request

from nixjail.models import SubmissionStatus
from nixjail.spool import Queue


def test_submit_answers_202_with_location_and_queues_the_job(api: Api) -> None:
    answer = api.post("/v1/submissions", json=sample_request())
    assert answer.status_code == 202
    body = answer.json()
    assert body["status"] == "queued"
    assert answer.headers["Location"] == f"/v1/submissions/{body['id']}"
    assert body["request"]["files"]["data.bin"] == {"content": "AAEC", "encoding": "base64"}
    assert body["stages"] == {"dependencies": None, "compile": None, "run": None}
    assert api.spool.queued(Queue.dependencies) == [body["id"]]
    assert api.kicks, "the runner was not kicked"


def test_submit_without_cache_goes_straight_to_the_run_queue(api: Api) -> None:
    body = api.submit(cache=False)
    assert api.spool.queued(Queue.run) == [body["id"]]


def test_get_returns_the_submission_and_404s_unknown_ids(api: Api) -> None:
    created = api.submit()
    answer = api.get(f"/v1/submissions/{created['id']}")
    assert answer.status_code == 200
    assert answer.json() == created
    for unknown in ("0" * 26, "not-an-id", "..%2F..%2Fetc"):
        missing = api.get(f"/v1/submissions/{unknown}")
        assert missing.status_code == 404, unknown
        assert missing.json()["title"] == "not found"


def _finish_soon(api: Api, submission_id: str, delay: float = 0.3) -> threading.Thread:
    def finish() -> None:
        time.sleep(delay)
        api.finish(submission_id)

    thread = threading.Thread(target=finish)
    thread.start()
    return thread


def test_post_wait_holds_until_the_submission_ends(api: Api) -> None:
    # The job's id is only known once created: finish whatever is queued first.
    def finish_first() -> None:
        deadline = time.monotonic() + 5
        while not api.spool.queued(Queue.dependencies) and time.monotonic() < deadline:
            time.sleep(0.02)
        api.finish(api.spool.queued(Queue.dependencies)[0])

    thread = threading.Thread(target=finish_first)
    thread.start()
    started = time.monotonic()
    answer = api.post("/v1/submissions?wait=5", json=sample_request())
    thread.join()
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "done"
    assert body["stages"]["run"]["stdout"] == "hi\n"
    assert time.monotonic() - started < 4


def test_get_wait_holds_until_the_submission_ends(api: Api) -> None:
    created = api.submit()
    thread = _finish_soon(api, created["id"])
    answer = api.get(f"/v1/submissions/{created['id']}?wait=5")
    thread.join()
    assert answer.status_code == 200
    assert answer.json()["status"] == "done"


def test_wait_gives_up_at_the_time_and_says_202_on_post(api: Api) -> None:
    started = time.monotonic()
    answer = api.post("/v1/submissions?wait=0.3", json=sample_request())
    assert answer.status_code == 202
    assert 0.25 <= time.monotonic() - started < 3
    got = api.get(f"/v1/submissions/{answer.json()['id']}?wait=0.2")
    assert got.status_code == 200
    assert got.json()["status"] == "queued"


def test_waits_are_capped_by_max_wait_s(make_api) -> None:
    api = make_api(max_wait_s=0.2)
    created = api.submit()
    started = time.monotonic()
    answer = api.get(f"/v1/submissions/{created['id']}?wait=1000")
    assert answer.status_code == 200
    assert time.monotonic() - started < 2


def test_cancel_a_queued_submission_then_409_once_ended(api: Api) -> None:
    created = api.submit()
    answer = api.request("DELETE", f"/v1/submissions/{created['id']}")
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "cancelled"
    assert all(stage["status"] == "skipped" for stage in body["stages"].values())
    assert api.spool.queued(Queue.dependencies) == []
    again = api.request("DELETE", f"/v1/submissions/{created['id']}")
    assert again.status_code == 409
    assert again.json()["title"] == "conflict"
    assert api.request("DELETE", "/v1/submissions/" + "0" * 26).status_code == 404


def test_cancel_a_done_submission_is_409(api: Api) -> None:
    created = api.submit()
    api.finish(created["id"])
    answer = api.request("DELETE", f"/v1/submissions/{created['id']}")
    assert answer.status_code == 409
    assert "done" in answer.json()["description"]


def test_paging_with_cursor_covers_everything_once_newest_first(api: Api) -> None:
    ids = [api.submit()["id"] for _ in range(5)]
    seen, pages, cursor = [], 0, None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        answer = api.get("/v1/submissions", params=params)
        assert answer.status_code == 200
        page = answer.json()
        pages += 1
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == sorted(ids, reverse=True)


def test_list_filters_by_status(api: Api) -> None:
    done = api.submit()
    api.finish(done["id"])
    cancelled = api.submit()
    api.request("DELETE", f"/v1/submissions/{cancelled['id']}")
    queued = api.submit()
    answer = api.get("/v1/submissions", params={"status": "queued,running"})
    assert [item["id"] for item in answer.json()["items"]] == [queued["id"]]
    answer = api.get("/v1/submissions?status=done,cancelled")
    assert {item["id"] for item in answer.json()["items"]} == {done["id"], cancelled["id"]}
    everything = api.get("/v1/submissions").json()
    assert len(everything["items"]) == 3
    assert everything["next_cursor"] is None


def test_submit_kicks_the_runner_socket(make_api, tmp_path: Path) -> None:
    from nixjail.kick import runner_kicker

    path = tmp_path / "runner.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen(1)
        listener.settimeout(5)
        runner_kicker(path)()
        connection, _ = listener.accept()
        connection.close()
    # No listener at all: the kick is silent and quick.
    started = time.monotonic()
    runner_kicker(tmp_path / "absent.sock")()
    assert time.monotonic() - started < 0.5


def test_submit_through_the_default_kick(tmp_path: Path) -> None:
    """create_app's own kick connects to settings.runner.kick_socket after an enqueue."""
    import falcon.testing

    from nixjail.api import create_app
    from nixjail.settings import Settings
    from nixjail.spool import Spool

    path = tmp_path / "k.sock"
    settings = Settings(spool_dir=tmp_path / "s", run_dir=tmp_path / "r",
                        runner={"kick_socket": path})
    spool = Spool(settings.spool_dir, settings.run_dir)
    client = falcon.testing.TestClient(create_app(spool, settings))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen(4)
        listener.settimeout(5)
        answer = client.simulate_post("/v1/submissions", json=sample_request())
        assert answer.status_code == 202
        listener.accept()[0].close()
    assert spool.get(answer.json["id"]).status is SubmissionStatus.queued
