"""Helpers of the compatibility front ends' tests.

`start_compat_api`: the real API (waitress on loopback, a real spool) with the
fixture catalog and the front ends' settings; the test plays the worker
through the spool (`CompatApi.finish`), so each edge is checked without a
container. `start_compat_stack`: the whole stack of tests/e2e (API, runner,
dockerd, the fixture nixpkgs) with the same catalog, for the real clients.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from api_helpers import serve_app
from e2e_stack import Stack, start_stack

from nixjail.api import create_app
from nixjail.models import CaseResult, StageResult, Submission
from nixjail.settings import Settings
from nixjail.spool import Queue, Spool

REPO = Path(__file__).resolve().parents[2]
FIXTURE_CATALOG = REPO / "examples" / "catalog" / "fixture.toml"

ALICE = "alice-compat-token"
BOB = "bob-compat-token"
TOKENS = f"submitter {ALICE} alice\nsubmitter {BOB} bob\n"


def fixture_environments() -> list[dict[str, Any]]:
    with FIXTURE_CATALOG.open("rb") as handle:
        return tomllib.load(handle)["environments"]


@dataclass
class CompatApi:
    url: str
    spool: Spool
    settings: Settings
    session: requests.Session = field(default_factory=requests.Session)

    def request(self, method: str, path: str, *, token: str | None = ALICE,
                header: str = "Authorization", **kwargs: Any) -> requests.Response:
        headers = kwargs.pop("headers", {})
        if token is not None:
            headers[header] = f"Bearer {token}" if header == "Authorization" else token
        kwargs.setdefault("timeout", 30)
        return self.session.request(method, self.url + path, headers=headers, **kwargs)

    def finish(self, submission_id: str, *, run: StageResult | None = None,
               case: CaseResult | None = None,
               compile_result: StageResult | None = None) -> Submission:
        """Play the worker: lease the run job and report what the test chose."""
        lease = self.spool.lease(Queue.run, "compat-test", wait_s=5)
        assert lease is not None and lease.submission_id == submission_id
        if compile_result is not None:
            self.spool.report_stage(lease, "compile", compile_result)
        if case is not None:
            self.spool.report_case(lease, 0, case)
        elif run is not None:
            self.spool.report_stage(lease, "run", run)
        return self.spool.complete(lease)


def start_compat_api(tmp: Path, *, compat: dict[str, Any], auth: bool = True,
                     environments: list[dict[str, Any]] | None = None,
                     **settings: Any) -> tuple[CompatApi, Callable[[], None]]:
    tmp.mkdir(parents=True, exist_ok=True)
    tokens_file = None
    if auth:
        tokens_file = tmp / "tokens"
        tokens_file.write_text(TOKENS)
    api_settings = {"tokens_file": tokens_file, "max_wait_s": 5, "threads": 8,
                    "max_waiters": 4, **settings.pop("api", {})}
    full = Settings.model_validate({
        "spool_dir": tmp / "spool", "run_dir": tmp / "run", "api": api_settings,
        "environments": fixture_environments() if environments is None else environments,
        "compat": compat, **settings})
    spool = Spool(full.spool_dir, full.run_dir, lease_s=full.lease_s,
                  max_attempts=full.max_attempts, dependency_jobs=False,
                  resolve_limits=full.resolve_limits)
    app = create_app(spool, full, kick=lambda: None)
    url, stop_server = serve_app(app, full)
    api = CompatApi(url=url, spool=spool, settings=full)

    def stop() -> None:
        api.session.close()
        stop_server()

    return api, stop


def start_compat_stack(base: Path, compat_toml: str, *,
                       runner_settings: str = "") -> Iterator[Stack]:
    """The e2e stack (a submitter token `sub-token`; the runner leases over
    HTTP with a worker token) with the fixture catalog and `compat_toml`
    ([compat.*] tables); `runner_settings` are keys of its [runner] table."""
    yield from start_stack(base, remote_runner=True, runner_settings=runner_settings,
                           extra_settings=compat_toml + "\n" + FIXTURE_CATALOG.read_text())
