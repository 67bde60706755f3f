"""Hostile requests to the codapi front end that once made a 500, or could:
a body nested past Python's recursion limit, a lone surrogate in a file, an
Origin that is no URL, a megabyte of name echoed back. Each must be refused
in codapi's shape, quickly, with nothing submitted."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests
from compat_helpers import CompatApi, start_compat_api

EXEC = "/codapi/v1/exec"
PAGE = "http://127.0.0.1:8123"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CompatApi]:
    api, stop = start_compat_api(
        tmp_path_factory.mktemp("codapi-hostile"), api={"max_wait_s": 0.2},
        compat={"codapi": {"enabled": True, "anonymous": True, "allowed_origins": [PAGE]},
                "anonymous_requests_per_minute": 10_000})
    yield api
    stop()


def exec_raw(api: CompatApi, raw: bytes, headers: dict[str, str] | None = None,
             method: str = "POST") -> requests.Response:
    return api.request(method, EXEC, token=None, data=raw, timeout=30,
                       headers={"Content-Type": "application/json", **(headers or {})})


def refused(answer: requests.Response, status: int, text: str) -> None:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert (body["id"], body["ok"], body["stdout"]) == ("-", False, ""), body
    assert text in body["stderr"], body


@pytest.mark.parametrize("raw", [
    b"[" * 100_000,
    b'{"sandbox": "bash", "files": ' + b'{"a": ' * 50_000 + b"}",
])
def test_a_body_nested_past_the_recursion_limit_is_a_400(api: CompatApi, raw: bytes) -> None:
    # json.loads raised RecursionError, which is no ValueError: it was a 500.
    refused(exec_raw(api, raw), 400, "nested too deeply")
    assert api.spool.list()[0] == []


@pytest.mark.parametrize("files", [{"": "\ud800"}, {"": "echo", "\udfff.sh": "x"}])
def test_a_lone_surrogate_in_a_file_is_a_400(api: CompatApi, files: dict[str, str]) -> None:
    # JSON may escape one ("\ud800"); encoding it for the file was a 500.
    raw = json.dumps({"sandbox": "bash", "files": files}).encode()
    refused(exec_raw(api, raw), 400, "is not valid Unicode")
    assert api.spool.list()[0] == []


@pytest.mark.parametrize("origin", ["http://[::1", "http://[zz]:1", "http://a:99999",
                                    "http://a:port", "null", "", "x" * 10_000])
def test_an_origin_that_is_no_url_is_refused_not_a_500(api: CompatApi, origin: str) -> None:
    # urlsplit raised ValueError on "http://[::1": a 500 on every request with it.
    raw = json.dumps({"sandbox": "bash", "files": {"": "echo"}}).encode()
    refused(exec_raw(api, raw, {"Origin": origin}), 403, "may not call this server")
    preflight = exec_raw(api, b"", {"Origin": origin, "Access-Control-Request-Method": "POST"},
                         method="OPTIONS")
    refused(preflight, 403, "may not call this server")
    assert "Access-Control-Allow-Origin" not in preflight.headers
    assert len(preflight.content) < 1000  # the 10 000 characters are not echoed whole
    assert api.spool.list()[0] == []


def test_a_huge_sandbox_name_is_not_echoed_whole(api: CompatApi) -> None:
    raw = json.dumps({"sandbox": "x" * 1_000_000, "files": {"": "echo"}}).encode()
    answer = exec_raw(api, raw)
    refused(answer, 404, "unknown sandbox: xxx")
    assert len(answer.content) < 1000


def test_too_many_files_are_refused_by_nixjails_own_cap(api: CompatApi) -> None:
    files = {"": "echo", **{f"f{i}": "" for i in range(100_000)}}
    answer = exec_raw(api, json.dumps({"sandbox": "bash", "files": files}).encode())
    refused(answer, 400, "files")
    assert api.spool.list()[0] == []
