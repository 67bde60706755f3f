"""Hostile bodies against the Piston front end's execute: each once made (or
could make) a 500, a traceback or a wait without end; now each is a 4xx or
5xx of its own in Piston's shape, `{"message": ...}`, naming the field.

The real API on loopback around a real spool (tests/compat/compat_helpers);
no worker takes the runs, so an accepted body would wait: every body here
must be refused before anything is submitted."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from compat_helpers import CompatApi, start_compat_api

EXECUTE = "/piston/api/v2/execute"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CompatApi]:
    api, stop = start_compat_api(tmp_path_factory.mktemp("piston-hostile"),
                                 compat={"piston": {"enabled": True}}, auth=False,
                                 api={"max_wait_s": 2})
    yield api
    stop()


def post(api: CompatApi, raw: bytes, content_type: str = "text/plain") -> Any:
    return api.request("POST", EXECUTE, token=None, data=raw,
                       headers={"Content-Type": content_type})


def body(**fields: str) -> bytes:
    """A JSON body from raw JSON texts of its fields, so anything JSON can hold fits."""
    fields = {"language": '"bash"', "files": '[{"content": "true"}]', **fields}
    return ("{" + ", ".join(f'"{name}": {value}' for name, value in fields.items())
            + "}").encode()


@pytest.mark.parametrize(("raw", "message"), [
    # Deeper than Python's JSON parser recurses: a RecursionError, not a ValueError.
    (b"[" * 200_000 + b"]" * 200_000, "nested too deeply"),
    (b'{"files": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
    # Python's json takes NaN and Infinity, which no JSON has.
    (body(run_timeout="NaN"), "NaN is not a JSON value"),
    (body(run_memory_limit="-Infinity"), "-Infinity is not a JSON value"),
    # Integers with no float: compared before any conversion.
    (body(run_timeout="1" + "0" * 400), "run_timeout cannot exceed"),
    (body(compile_memory_limit="-" + "9" * 400), "compile_memory_limit must be non-negative"),
    # Lone surrogates: valid JSON, no UTF-8.
    (body(language='"\\ud800"'), "language is required as a string"),
    (body(version='"\\udfff"'), "version must be a string"),
    (body(files='[{"content": "\\ud800"}]'), "files[0].content is required as a string"),
    (body(files='[{"content": "x"}, {"content": "y", "name": "\\ud800"}]'),
     "files[1].name must be a string"),
    (body(stdin='"\\ud800"'), "stdin must be a string"),
    (body(args='["\\udbff"]'), "args must be an array of strings"),
    # Names that would leave the work dir, or cut a path short.
    (body(files='[{"content": "x"}, {"content": "y", "name": "a/../../etc/passwd"}]'),
     "files[1].name"),
    (body(files='[{"content": "x"}, {"content": "y", "name": "a\\u0000b"}]'),
     "must not contain NUL bytes"),
    (body(files='[{"content": "x"}, {"content": "y", "name": "' + "a" * 300 + '"}]'),
     "longer than 255 bytes"),
    # More files than a submission may hold.
    (body(files="[" + ", ".join(['{"content": "x"}'] * 300) + "]"), "files"),
    # A version range as long as the body may be: refused by its length.
    (body(version='"' + "1.2.3 || " * 5000 + '1"'), "longer than 256 characters"),
    (body(version='"' + "1" * 5000 + '"'), "runtime is unknown"),
    # Wrong types where a number, a list or an object is read.
    (body(files='[{"content": "x", "encoding": ["base64"]}]'), "files[0].encoding"),
    (body(files='[{"content": "x", "encoding": {}}]'), "files[0].encoding"),
    (body(args='[["nested"]]'), "args must be an array of strings"),
    (body(run_timeout='{"ms": 1}'), "run_timeout must be a number"),
])
def test_a_hostile_body_is_refused_never_a_500(api: CompatApi, raw: bytes,
                                               message: str) -> None:
    answer = post(api, raw)
    assert 400 <= answer.status_code < 500, answer.text[:300]
    assert set(answer.json()) == {"message"}, answer.text[:300]
    assert message in answer.json()["message"], answer.json()["message"][:300]
    assert api.spool.list()[0] == []


def test_a_long_version_range_is_answered_at_once(api: CompatApi) -> None:
    # The patterns that read a range run on at most 256 characters.
    started = time.monotonic()
    answer = post(api, body(version='"' + "-" * 255 + '"'))
    assert answer.status_code == 400
    assert time.monotonic() - started < 5


def test_a_chunked_body_past_the_cap_is_refused(api: CompatApi) -> None:
    cap = api.settings.api.max_body_bytes

    def chunks() -> Iterator[bytes]:
        yield b'{"language": "bash", "files": [{"content": "'
        for _ in range(cap // (1 << 20) + 2):
            yield b"x" * (1 << 20)
        yield b'"}]}'

    answer = api.request("POST", EXECUTE, token=None, data=chunks(),
                         headers={"Content-Type": "text/plain"})
    assert answer.status_code == 413, answer.text[:300]
    assert "larger than" in answer.json()["message"]


def test_a_run_nobody_takes_ends_the_wait_and_is_cancelled(api: CompatApi) -> None:
    # No worker: the answer comes after api.max_wait_s, not never.
    started = time.monotonic()
    answer = post(api, body())
    assert answer.status_code == 504, answer.text
    assert time.monotonic() - started < 30
    (submission,), _ = api.spool.list()
    assert submission.status == "cancelled"
    api.spool.delete(submission.id)
