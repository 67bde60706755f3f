"""Every class of bad input: a 4xx in the one JSON error shape, naming the field."""

from __future__ import annotations

import json
from typing import Any

import pytest
from api_helpers import BOTH, Api, raw_http, sample_request


def assert_error(answer: Any, status: int, *fields: str) -> dict:
    assert answer.status_code == status, answer.text
    assert answer.headers["Content-Type"].startswith("application/json")
    body = answer.json()
    assert set(body) == {"title", "description", "errors"}
    assert body["title"] and body["description"]
    assert [error["field"] for error in body["errors"]] == list(fields)
    for error in body["errors"]:
        assert error["reason"]
        assert "pydantic" not in error["reason"] and "http" not in error["reason"]
    return body


@pytest.mark.parametrize(("changes", "field", "words"), [
    ({"run_sh": 5}, "run_sh", "valid string"),
    ({"cache": "perhaps"}, "cache", "boolean"),
    ({"files": ["main.c"]}, "files", "object"),
    ({"limits": {"run": {"memory_mib": "lots"}}}, "limits.run.memory_mib", "integer"),
    ({"limits": {"run": {"memory_mib": 0}}}, "limits.run.memory_mib", "greater than 0"),
    ({"limits": {"link": {}}}, "limits.link", "not permitted"),
    ({"files": {"/etc/passwd": "x"}}, 'files["/etc/passwd"]', "relative"),
    ({"files": {"../x": "x"}}, 'files["../x"]', "'..'"),
    ({"files": {"a/../../x": "x"}}, 'files["a/../../x"]', "'..'"),
    ({"files": {"a\u0000b": "x"}}, 'files["a\\u0000b"]', "NUL"),
    ({"files": {"": "x"}}, 'files[""]', "empty"),
    ({"files": {"a": 1}}, 'files["a"]', "string or an object"),
    ({"files": {"a": {"content": "%%%", "encoding": "base64"}}}, 'files["a"]', "base64"),
    ({"files": {"a": {"content": "x", "encoding": "rot13"}}}, 'files["a"].encoding', "utf-8"),
    ({"files": {"a": "x", "a/b": "y"}}, "files", "lies under"),
    ({"run_sh": "echo \u0000"}, "run_sh", "NUL"),
    ({"compile_sh": "gcc \u0000"}, "compile_sh", "NUL"),
    ({"shell_nix": "\u0000"}, "shell_nix", "NUL"),
    ({"shell_nix": ""}, "shell_nix", "at least 1"),
    ({"surprise": True}, "surprise", "not permitted"),
])
def test_bad_fields_are_422_naming_the_field(api: Api, changes: dict, field: str,
                                             words: str) -> None:
    answer = api.post("/v1/submissions", json=sample_request(**changes))
    body = assert_error(answer, 422, field)
    assert words in body["errors"][0]["reason"], body
    assert body["title"] == "invalid input"


def test_missing_fields_are_each_named(api: Api) -> None:
    body = assert_error(api.post("/v1/submissions", json={}), 422, "shell_nix", "run_sh")
    assert all(error["reason"].startswith("required") for error in body["errors"])


def test_limits_above_the_maxima_are_named_one_by_one(api: Api) -> None:
    maxima = api.settings.limits_max
    limits = {"run": {"memory_mib": maxima.run.memory_mib + 1, "wall_time_s": 1},
              "compile": {"processes": maxima.compile.processes * 2}}
    body = assert_error(api.post("/v1/submissions", json=sample_request(limits=limits)), 422,
                        "limits.compile.processes", "limits.run.memory_mib")
    assert "above the maximum" in body["errors"][1]["reason"]
    assert str(maxima.run.memory_mib) in body["errors"][1]["reason"]
    at_maximum = {"run": {"memory_mib": maxima.run.memory_mib}}
    assert api.post("/v1/submissions", json=sample_request(limits=at_maximum)).status_code == 202


@pytest.mark.parametrize("raw", [b"{", b"", b"nul\x00l", b'{"run_sh": "a\x00"}', b"\xff\xfe",
                                 b"[1, 2", b'{"shell_nix": "\\ud800"}'])
def test_invalid_json_is_400(api: Api, raw: bytes) -> None:
    answer = api.post("/v1/submissions", data=raw,
                      headers={"Content-Type": "application/json"})
    body = assert_error(answer, 400, "body")
    assert body["title"] == "invalid JSON"


def test_valid_json_of_the_wrong_shape_is_422(api: Api) -> None:
    for document in ([], "text", 3, None):
        answer = api.post("/v1/submissions", data=json.dumps(document),
                          headers={"Content-Type": "application/json"})
        assert_error(answer, 422, "body")


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "application/json; charset=latin-1",
                                          "application/jsonx"])
def test_wrong_content_type_is_415(api: Api, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    answer = api.post("/v1/submissions", data=json.dumps(sample_request()).encode(),
                      headers=headers)
    assert_error(answer, 415, "Content-Type")


def test_content_type_parameters_and_case_are_accepted(api: Api) -> None:
    answer = api.post("/v1/submissions", data=json.dumps(sample_request()),
                      headers={"Content-Type": "Application/JSON; charset=UTF-8"})
    assert answer.status_code == 202


def test_oversize_body_is_413_from_content_length(api: Api) -> None:
    cap = api.settings.api.max_body_bytes
    big = sample_request(stdin="x" * cap)
    assert_error(api.post("/v1/submissions", json=big), 413, "body")
    # Only just above the cap counts as well.
    data = json.dumps(sample_request(stdin="")).encode()
    padded = data[:-1] + b" " * (cap + 1 - len(data)) + b"}"
    assert len(padded) == cap + 1
    assert_error(api.post("/v1/submissions", data=padded,
                          headers={"Content-Type": "application/json"}), 413, "body")
    at_cap = data[:-1] + b" " * (cap - len(data)) + b"}"
    assert api.post("/v1/submissions", data=at_cap,
                    headers={"Content-Type": "application/json"}).status_code == 202


def test_oversize_chunked_body_is_413(api: Api) -> None:
    cap = api.settings.api.max_body_bytes

    def chunks():
        yield b'{"shell_nix": "x", "run_sh": "y", "stdin": "'
        for _ in range(cap // 4096 + 2):
            yield b"x" * 4096
        yield b'"}'

    answer = api.post("/v1/submissions", data=chunks(),
                      headers={"Content-Type": "application/json"})
    assert answer.request.headers["Transfer-Encoding"] == "chunked"
    assert_error(answer, 413, "body")
    small = iter([b'{"shell_nix": "x", ', b'"run_sh": "y"}'])
    assert api.post("/v1/submissions", data=small,
                    headers={"Content-Type": "application/json"}).status_code == 202


def test_a_client_that_sends_a_large_body_whole_gets_the_json_413(api: Api) -> None:
    # urllib sends the whole body before it reads a byte of the answer; a
    # server that answered early and closed would reset its connection.
    import urllib.error
    import urllib.request

    body = b'{"shell_nix": "x", "run_sh": "y", "stdin": "' + b"x" * (20 << 20) + b'"}'
    request = urllib.request.Request(
        api.url + "/v1/submissions", data=body, method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {BOTH}"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=60)
    assert refused.value.code == 413
    answer = json.loads(refused.value.read())
    assert answer["errors"] == [{"field": "body", "reason": answer["description"]}]
    assert str(api.settings.api.max_body_bytes) in answer["description"]


def test_a_huge_declared_length_is_refused_before_the_body_arrives(api: Api) -> None:
    answer = raw_http(api, b"POST /v1/submissions HTTP/1.1\r\nHost: x\r\n"
                      b"Authorization: Bearer " + BOTH.encode() + b"\r\n"
                      b"Content-Type: application/json\r\nConnection: close\r\n"
                      b"Content-Length: 10000000000\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413")


def test_the_body_check_reads_a_stream_without_length_up_to_the_cap() -> None:
    """Behind a server that passes chunked bodies through, the cap applies while reading."""
    import io

    import falcon
    import falcon.testing

    from nixjail.api.media import read_body

    cap = 1000
    # A terminated stream ends with the body; the oversized one is never read whole.
    for body, expect in ((b"x" * cap, None), (b"x" * cap * 100, 413)):
        env = falcon.testing.create_environ(
            method="POST", path="/", headers={"Content-Type": "application/json"})
        env.pop("CONTENT_LENGTH", None)
        env["wsgi.input"] = stream = io.BytesIO(body)
        env["wsgi.input_terminated"] = True
        req = falcon.Request(env)
        if expect is None:
            assert len(read_body(req, cap)) == cap
        else:
            with pytest.raises(falcon.HTTPError) as raised:
                read_body(req, cap)
            assert raised.value.status_code == 413
            assert stream.tell() == cap + 1


@pytest.mark.parametrize(("path", "field"), [
    ("/v1/submissions?wait=-1", "wait"),
    ("/v1/submissions?wait=abc", "wait"),
    ("/v1/submissions?wait=nan", "wait"),
    ("/v1/submissions?wait=inf", "wait"),
    ("/v1/submissions?wait=1&wait=2", "wait"),
    ("/v1/submissions?sleep=1", "sleep"),
])
def test_bad_wait_on_post_is_400(api: Api, path: str, field: str) -> None:
    answer = api.post(path, json=sample_request())
    assert_error(answer, 400, field)
    assert api.get("/v1/submissions").json()["items"] == []  # nothing was created


@pytest.mark.parametrize(("query", "field"), [
    ("limit=abc", "limit"),
    ("limit=0", "limit"),
    ("limit=201", "limit"),
    ("limit=", "limit"),
    ("status=queued,sleeping", "status[1]"),
    ("status=", "status[0]"),
    ("cursor=../x", "cursor"),
    ("wait=1", "wait"),
])
def test_bad_list_parameters_are_400(api: Api, query: str, field: str) -> None:
    body = assert_error(api.get(f"/v1/submissions?{query}"), 400, field)
    assert body["title"] == "invalid parameter"


def test_bad_wait_on_get_is_400(api: Api) -> None:
    created = api.submit()
    assert_error(api.get(f"/v1/submissions/{created['id']}?wait=-1"), 400, "wait")


def test_unknown_routes_and_methods_answer_json(api: Api) -> None:
    body = assert_error(api.get("/v2/submissions"), 404, "path")
    assert body["title"] == "not found"
    answer = api.request("PATCH", "/v1/submissions")
    body = assert_error(answer, 405, "method")
    assert body["title"] == "method not allowed"
    assert "POST" in answer.headers["Allow"]
    assert_error(api.request("DELETE", "/v1/leases"), 405, "method")


def test_an_unexpected_failure_is_a_plain_500(api: Api, monkeypatch, caplog) -> None:
    def explode(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(api.spool, "list", explode)
    answer = api.get("/v1/submissions")
    body = assert_error(answer, 500, "request")
    assert body["title"] == "internal error"
    assert "secret" not in answer.text and "Traceback" not in answer.text
    assert any("secret internals" in (r.exc_text or "") or r.exc_info for r in caplog.records)
