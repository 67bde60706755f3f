"""callback_url through the API: the prefix rule, and a callback sent by the API process."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from api_helpers import Api, sample_request
from test_api_validation import assert_error


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
    received: list[tuple[dict[str, str], bytes]] = []
    arrived = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append((dict(self.headers),
                             self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()
            arrived.set()

        def log_message(self, *args: object) -> None:
            pass

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        prefix = f"http://127.0.0.1:{receiver.server_address[1]}/hooks/"
        (tmp_path / "secret").write_text("k3y\n")
        api = make_api(callbacks={"allowed_prefixes": [prefix],
                                  "secret_file": str(tmp_path / "secret"),
                                  "backoff_s": 0.05})
        answer = api.post("/v1/submissions", json=sample_request(callback_url=prefix + "1"))
        assert answer.status_code == 202, answer.text
        submission_id = answer.json()["id"]
        assert received == []  # nothing until it ends
        api.finish(submission_id)
        assert arrived.wait(10)
    finally:
        receiver.shutdown()
        receiver.server_close()
    [(headers, body)] = received
    expected = hmac.new(b"k3y", f"{headers['X-Nixjail-Timestamp']}.".encode() + body,
                        hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Nixjail-Signature"], f"sha256={expected}")
    summary = json.loads(body)
    assert (summary["id"], summary["status"]) == (submission_id, "done")
    assert "files" not in summary  # the summary, not the request
