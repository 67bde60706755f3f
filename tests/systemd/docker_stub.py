"""A Docker API stand-in for the systemd tests: it has no containers and runs none.

Enough for a runner to start (the SDK asks for the version), look for
containers a predecessor left (none) and idle; anything else is refused, so
a runner that leases a submission records a docker failure. Usage:
docker_stub.py SOCKET (made root:docker, mode 0660, like dockerd's).
"""

import grp
import json
import os
import socketserver
import sys
from http.server import BaseHTTPRequestHandler


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        endpoint = "/" + path.lstrip("/").split("/", 1)[-1] if path.startswith("/v1.") else path
        if endpoint == "/_ping":
            self.answer(200, "OK", "text/plain")
        elif endpoint == "/version":
            self.answer(200, {"ApiVersion": "1.41", "MinAPIVersion": "1.12",
                              "Version": "20.10.24"})
        elif endpoint == "/containers/json":
            self.answer(200, [])
        else:
            self.refuse()

    def do_POST(self) -> None:
        self.refuse()

    do_DELETE = do_POST

    def refuse(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.answer(501, {"message": "the test Docker stand-in runs no containers"})

    def answer(self, status: int, body: object, content_type: str = "application/json") -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def address_string(self) -> str:
        return "unix"


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def main() -> None:
    path = sys.argv[1]
    if os.path.exists(path):
        os.unlink(path)
    server = Server(path, Handler)
    os.chown(path, 0, grp.getgrnam("docker").gr_gid)
    os.chmod(path, 0o660)
    server.serve_forever()


if __name__ == "__main__":
    main()
