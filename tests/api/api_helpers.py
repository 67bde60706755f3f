"""Helpers of the API tests: a real server over loopback HTTP around a real spool."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from nixjail.api import create_app
from nixjail.api.server import ApiServer, bind
from nixjail.callbacks import sender_for
from nixjail.models import StageResult, Submission
from nixjail.settings import Settings
from nixjail.spool import Queue, Spool

SUBMITTER = "submitter-token-1"
WORKER = "worker-token-1"
BOTH = "both-token-1"
# Tenants named in the tokens file: alice has two tokens, ops is an admin.
ALICE = "alice-token-1"
ALICE_TOO = "alice-token-2"
BOB = "bob-token-1"
ADMIN = "admin-token-1"

TOKENS = f"""\
# role token [tenant]
submitter {SUBMITTER}
worker    {WORKER}
submitter {BOTH}
worker {BOTH}
submitter {ALICE} alice
submitter {ALICE_TOO} alice
submitter {BOB} bob
admin {ADMIN} ops
"""


def sample_request(**changes: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "shell_nix": "{ pkgs ? import <nixpkgs> {} }: pkgs.mkShell {}",
        "files": {"main.sh": "echo hi", "data.bin": {"content": "AAEC", "encoding": "base64"}},
        "compile_sh": "true",
        "run_sh": "sh main.sh",
        "limits": {"run": {"wall_time_s": 2, "memory_mib": 128}},
    }
    request.update(changes)
    return request


@dataclass
class Api:
    url: str
    spool: Spool
    settings: Settings
    kicks: list[float] = field(default_factory=list)
    session: requests.Session = field(default_factory=requests.Session)

    def request(self, method: str, path: str, *, token: str | None = BOTH,
                **kwargs: Any) -> requests.Response:
        headers = kwargs.pop("headers", {})
        if token is not None:
            headers.setdefault("Authorization", f"Bearer {token}")
        kwargs.setdefault("timeout", 30)
        return self.session.request(method, self.url + path, headers=headers, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def submit(self, *, token: str | None = BOTH, **changes: Any) -> dict[str, Any]:
        answer = self.post("/v1/submissions", json=sample_request(**changes), token=token)
        assert answer.status_code == 202, answer.text
        return answer.json()

    def finish(self, submission_id: str) -> Submission:
        """Play both workers through the spool: the submission ends done."""
        # The queue entry is written before the record: a job is leasable
        # once both are there, which the lease's own wait covers.
        lease = self.spool.lease(Queue.dependencies, "test-builder", wait_s=5)
        assert lease is not None and lease.submission_id == submission_id
        self.spool.report_stage(lease, "dependencies", StageResult(status="ok", cached=True))
        self.spool.complete(lease)
        lease = self.spool.lease(Queue.run, "test-runner")
        assert lease is not None
        self.spool.report_stage(lease, "compile", StageResult(status="ok"))
        self.spool.report_stage(lease, "run", StageResult(status="ok", exit_code=0,
                                                          stdout="hi\n"))
        return self.spool.complete(lease)


def start_server(tmp: Path, *, auth: bool = True, spool_dir: Path | None = None,
                 callbacks: dict[str, Any] | None = None,
                 **api_settings: Any) -> tuple[Api, Callable]:
    tmp.mkdir(parents=True, exist_ok=True)
    tokens_file = None
    if auth:
        tokens_file = tmp / "tokens"
        tokens_file.write_text(TOKENS)
    settings = Settings(
        spool_dir=spool_dir or tmp / "spool", run_dir=tmp / "run",
        api={"tokens_file": tokens_file, "max_wait_s": 5, "max_body_bytes": 256 * 1024,
             "threads": 8, "max_waiters": 4, **api_settings},
        callbacks=callbacks or {},
    )
    spool = Spool(settings.spool_dir, settings.run_dir, lease_s=settings.lease_s,
                  max_attempts=settings.max_attempts)
    kicks: list[float] = []
    app = create_app(spool, settings, kick=lambda: kicks.append(1.0))
    url, stop_server = serve_app(app, settings, callbacks=sender_for(spool, settings.callbacks))
    api = Api(url=url, spool=spool, settings=settings, kicks=kicks)

    def stop() -> None:
        api.session.close()
        stop_server()

    return api, stop


def serve_app(app: Any, settings: Settings, **server_options: Any) -> tuple[str, Callable]:
    """`app` served by a real ApiServer on a free loopback port, in a thread:
    its URL, and how to stop it."""
    sock = bind("127.0.0.1:0")
    server = ApiServer(app, [sock], settings, **server_options)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        server.stop()
        thread.join(10)
        assert not thread.is_alive()

    return f"http://127.0.0.1:{sock.getsockname()[1]}", stop




def raw_http(api: Api, request: bytes) -> bytes:
    """Send bytes as they are (for framing `requests` never builds) and read the answer."""
    host, port = api.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)
