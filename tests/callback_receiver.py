"""A loopback HTTP receiver of callbacks, for the tests that send them."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Received = tuple[str, dict[str, str], bytes]  # path, headers, body


class Receiver:
    """Answers each POST with the next status of `answers` (200 once they are
    used up; a redirect points to /elsewhere) and records every request."""

    def __init__(self, answers: list[int] | None = None, *, path: str = "/hook") -> None:
        self.answers = list(answers or [])
        self.requests: list[Received] = []
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.arrived:
                    receiver.requests.append((self.path, dict(self.headers), body))
                    status = receiver.answers.pop(0) if receiver.answers else 200
                    receiver.arrived.notify_all()
                self.send_response(status)
                if status in (301, 302, 307):
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{path}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count: int, timeout_s: float = 10) -> list[Received]:
        """The requests so far, once there are `count` (or at the timeout)."""
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.requests) >= count, timeout=timeout_s)
            return list(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
