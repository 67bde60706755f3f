"""Long-polls that cannot starve the API, and reads that stay small."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable

from api_helpers import BOTH, WORKER, Api, sample_request

HELD = 100


def held_request(api: Api, path: str, answers: list) -> Callable[[], None]:
    host, port = api.url.removeprefix("http://").split(":")

    def run() -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=60)
        started = time.monotonic()
        connection.request("GET", path, headers={"Authorization": f"Bearer {BOTH}"})
        answer = connection.getresponse()
        status = json.loads(answer.read())["status"]
        answers.append((status, time.monotonic() - started, answer.getheader("Retry-After")))
        connection.close()

    return run


def timed(call: Callable[[], object]) -> float:
    started = time.monotonic()
    call()
    return time.monotonic() - started


def test_a_hundred_long_polls_leave_every_other_request_fast(make_api) -> None:
    api = make_api(threads=16, max_waiters=8, max_wait_s=20)
    waiting = api.submit()
    answers: list = []
    polls = [threading.Thread(target=held_request(api, f"/v1/submissions/{waiting['id']}"
                                                  "?wait=20", answers))
             for _ in range(HELD)]
    for poll in polls:
        poll.start()
    # Past the cap, a wait answers at once: all but the 8 held ones come back.
    deadline = time.monotonic() + 10
    while len(answers) < HELD - 8 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(answers) == HELD - 8, len(answers)
    assert all(status == "queued" and took < 5 and retry == "1"
               for status, took, retry in answers), answers[:5]

    # With 8 long-polls held, everything else answers in milliseconds.
    slowest = max(
        timed(lambda: api.get("/healthz", token=None).raise_for_status()),
        timed(lambda: api.post("/v1/submissions", json=sample_request()).raise_for_status()),
        timed(lambda: api.post("/v1/leases", json={"queue": "run", "holder": "w"},
                               token=WORKER).raise_for_status()),
        timed(lambda: api.get(f"/v1/submissions/{waiting['id']}").raise_for_status()),
    )
    assert slowest < 0.5, f"{slowest:.3f} s"
    grant = api.post("/v1/leases", json={"queue": "dependencies", "holder": "w"},
                     token=WORKER).json()
    renewal = timed(lambda: api.post(
        f"/v1/leases/{grant['lease']['submission_id']}/renew",
        json={"token": grant["lease"]["token"]}, token=WORKER).raise_for_status())
    assert renewal < 0.5, f"{renewal:.3f} s"

    # The held ones answer as soon as the submission ends.
    api.spool.cancel(waiting["id"])
    for poll in polls:
        poll.join(timeout=10)
    assert len(answers) == HELD
    assert [status for status, _, _ in answers].count("cancelled") == 8


def test_past_the_cap_a_wait_answers_at_once_and_says_when_to_ask_again(make_api) -> None:
    api = make_api(threads=4, max_waiters=1, max_wait_s=10)
    waiting = api.submit()
    answers: list = []
    polls = [threading.Thread(target=held_request(
        api, f"/v1/submissions/{waiting['id']}?wait=10", answers)) for _ in range(3)]
    for poll in polls:
        poll.start()
    deadline = time.monotonic() + 5
    while len(answers) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [(status, retry) for status, _, retry in answers] == [("queued", "1")] * 2
    api.spool.cancel(waiting["id"])
    for poll in polls:
        poll.join(timeout=10)
    status, _, retry = answers[2]
    assert (status, retry) == ("cancelled", None)


def test_a_list_page_leaves_out_requests_and_outputs(api: Api) -> None:
    big = "x" * 100_000
    created = api.submit(files={"big.txt": big}, stdin=big)
    api.finish(created["id"])
    page = api.get("/v1/submissions")
    assert page.status_code == 200
    assert len(page.content) < 4096, len(page.content)
    (item,) = page.json()["items"]
    assert item["id"] == created["id"] and item["status"] == "done"
    assert "request" not in item and "stdout" not in item["stages"]["run"]
    assert item["stages"]["run"]["exit_code"] == 0
    assert item["finished_at"] is not None


def test_one_submission_as_a_summary_on_request(api: Api) -> None:
    created = api.submit(stdin="y" * 200_000)
    full = api.get(f"/v1/submissions/{created['id']}")
    summary = api.get(f"/v1/submissions/{created['id']}?view=summary")
    assert full.json()["request"]["stdin"] == "y" * 200_000
    assert summary.status_code == 200 and "request" not in summary.json()
    assert summary.json()["status"] == "queued" and len(summary.content) < 1024
    wrong = api.get(f"/v1/submissions/{created['id']}?view=everything")
    assert wrong.status_code == 400
    assert wrong.json()["errors"][0]["field"] == "view"
