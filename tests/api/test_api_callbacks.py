"""callback_url through the API: the prefix rule, and a callback sent by the API process."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from pathlib import Path

from api_helpers import Api, sample_request
from test_api_validation import assert_error

from callback_receiver import Receiver


def test_a_callback_url_outside_the_allowed_prefixes_is_422(
        make_api: Callable[..., Api]) -> None:
    api = make_api(callbacks={"allowed_prefixes": ["http://127.0.0.1:9/hooks/"]})
    answer = api.post("/v1/submissions",
                      json=sample_request(callback_url="http://127.0.0.1:9/elsewhere"))
    body = assert_error(answer, 422, "callback_url")
    assert "not under a prefix" in body["errors"][0]["reason"]


def test_without_allowed_prefixes_no_callback_is_accepted(api: Api) -> None:
    answer = api.post("/v1/submissions",
                      json=sample_request(callback_url="http://127.0.0.1:9/hooks/"))
    body = assert_error(answer, 422, "callback_url")
    assert "allows no callbacks" in body["errors"][0]["reason"]


def test_a_callback_url_inside_is_accepted_and_called_when_it_ends(
        make_api: Callable[..., Api], tmp_path: Path) -> None:
    receiver = Receiver(path="/hooks/")
    try:
        prefix = receiver.url
        (tmp_path / "secret").write_text("k3y\n")
        api = make_api(callbacks={"allowed_prefixes": [prefix],
                                  "secret_file": str(tmp_path / "secret"),
                                  "backoff_s": 0.05})
        answer = api.post("/v1/submissions", json=sample_request(callback_url=prefix + "1"))
        assert answer.status_code == 202, answer.text
        submission_id = answer.json()["id"]
        assert receiver.requests == []  # nothing until it ends
        api.finish(submission_id)
        received = receiver.wait_for(1)
    finally:
        receiver.close()
    [(_, headers, body)] = received
    expected = hmac.new(b"k3y", f"{headers['X-Nixjail-Timestamp']}.".encode() + body,
                        hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Nixjail-Signature"], f"sha256={expected}")
    summary = json.loads(body)
    assert (summary["id"], summary["status"]) == (submission_id, "done")
    assert "files" not in summary  # the summary, not the request
