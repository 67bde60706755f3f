"""What the API commands share: the options, and failures as exit codes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cli_harness import nixjail

from nixjail.cli.api_options import exit_code_for
from nixjail.client import ApiInvalidInput, ApiNotFound, ApiUnavailable
from nixjail.errors import ApiError, InvalidInput


@pytest.mark.parametrize(("error", "code"), [
    (ApiUnavailable("cannot reach"), 75),
    (ApiInvalidInput(422, "invalid input"), 64),
    (ApiNotFound(404, "not found"), 64),
    (ApiError(401, "unauthorized"), 64),
    (ApiError(403, "forbidden"), 64),
    (ApiError(429, "too many requests"), 75),
    (ApiError(500, "internal server error"), 70),
    (ApiError(503, "service unavailable"), 75),
    (ApiError(507, "insufficient storage"), 75),
    (InvalidInput("--stdin", "cannot read x"), 64),
])
def test_exit_code_for(error: Exception, code: int) -> None:
    assert exit_code_for(error) == code


@pytest.fixture
def failing_api() -> Iterator[tuple[str, list[int]]]:
    """A server that answers every request with the status at the head of `statuses`
    (an API that broke: nixjail's own never answers 500 on purpose)."""
    statuses = [500]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"title": "internal server error", "description": "boom", "errors": []}'
            self.send_response(statuses[0])
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", statuses
    finally:
        server.shutdown()
        thread.join()


def test_a_broken_api_is_70_an_overloaded_one_75(failing_api: tuple[str, list[int]]) -> None:
    url, statuses = failing_api
    for argv in (["list"], ["status", "x"], ["cancel", "x"]):
        done = nixjail(*argv, "--api", url)
        assert done.returncode == 70, (argv, done.stderr)
        assert done.stderr == "nixjail: internal server error (HTTP 500): boom\n"
    statuses[0] = 503
    assert nixjail("list", "--api", url).returncode == 75


def test_unreadable_token_file_is_a_usage_error(tmp_path) -> None:
    done = nixjail("list", "--token-file", tmp_path / "missing")
    assert done.returncode == 64
    assert done.stderr == (f"nixjail: --token-file: cannot read {tmp_path / 'missing'}: "
                           "No such file or directory\n")
