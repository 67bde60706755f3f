"""The API row's baseline: a bare falcon app on waitress that answers
`GET /v1/submissions/{id}` with a constant, as many threads as nixjail's API.

    python -m bench.bare_api --port PORT --threads N

It prints one line once it listens.
"""

from __future__ import annotations

import argparse
import socket

import falcon
import waitress

CONSTANT = b'{"id": "0", "status": "done"}'


class Constant:
    def on_get(self, req: falcon.Request, resp: falcon.Response, submission_id: str) -> None:
        resp.data = CONSTANT
        resp.content_type = falcon.MEDIA_JSON


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    args = parser.parse_args()
    app = falcon.App()
    app.add_route("/v1/submissions/{submission_id}", Constant())
    sock = socket.create_server(("127.0.0.1", args.port), backlog=128)
    print("listening", flush=True)
    waitress.serve(app, sockets=[sock], threads=args.threads, ident="bare", _quiet=True)


if __name__ == "__main__":
    main()
