"""Attacks on the Judge0 front end through plain HTTP: requests its real
client would never send, each a hole that was found (a 500 where a refusal
was due) and is kept closed here."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from compat_helpers import CompatApi, start_compat_api

J = "/judge0"


@pytest.fixture(scope="module")
def judge0(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CompatApi]:
    api, stop = start_compat_api(tmp_path_factory.mktemp("judge0"),
                                 compat={"judge0": {"enabled": True}})
    yield api
    stop()


@pytest.mark.parametrize("language_id", ["²", "٣", " 46²"])
def test_a_language_id_of_digits_that_are_not_ascii_is_refused_not_a_500(
        judge0: CompatApi, language_id: str) -> None:
    # str.isdigit calls "²" a digit; int() does not take it (hypothesis found the 500).
    answer = judge0.request("POST", f"{J}/submissions", json={
        "language_id": language_id, "source_code": "echo hi"})
    assert answer.status_code == 422, answer.text
    assert "language_id" in answer.json(), answer.text
    assert judge0.request("GET", f"{J}/languages/{language_id}").status_code in (400, 404)


@pytest.mark.parametrize("raw", [b"[" * 100_000 + b"]" * 100_000,
                                 b'{"language_id": NaN, "source_code": "echo hi"}'])
def test_a_body_nested_past_the_parser_or_with_nan_is_refused_not_a_500(
        judge0: CompatApi, raw: bytes) -> None:
    # Python's JSON parser raises RecursionError, not ValueError, that deep.
    answer = judge0.request("POST", f"{J}/submissions", data=raw,
                            headers={"Content-Type": "application/json"})
    assert answer.status_code == 400, answer.text[:300]
    assert "not valid JSON" in answer.json()["error"], answer.text[:300]
