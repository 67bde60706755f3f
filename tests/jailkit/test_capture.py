"""Output capture: the cap, and the one rule for what is not printable text."""

from __future__ import annotations

import pytest

from nixjail.jailkit.capture import Capture, is_binary


@pytest.mark.parametrize("data", [
    b"", b"hello\n", b"tab\tand\r\n", "é ü 漢字 😀\n".encode(), b"~ printable ascii !"])
def test_text_is_not_binary(data: bytes) -> None:
    assert not is_binary(data)


@pytest.mark.parametrize("data", [
    b"nul\x00", b"\x1b[2J", b"bell\x07", b"\x7f", b"\xff\xfe", b"\xc3", b"\xed\xa0\x80",
    "c1 \u0085".encode(), b"form\x0cfeed", b"vertical\x0btab"])
def test_bytes_that_are_not_printable_text_are_binary(data: bytes) -> None:
    assert is_binary(data)


def test_a_character_cut_by_the_cap_is_no_fault() -> None:
    capture = Capture(cap=3)
    assert not capture.add("aé".encode() + b"b")  # 4 bytes, the cap keeps 3: "a" + "é"
    assert capture.truncated and bytes(capture.data) == "aé".encode()
    capture = Capture(cap=2)
    capture.add("aé".encode())  # "a" and the first byte of "é"
    assert capture.truncated and not capture.binary
    # Uncut, the same lone byte is not UTF-8.
    assert is_binary(b"a\xc3")


def test_the_cap() -> None:
    capture = Capture(cap=5)
    assert capture.add(b"abc")
    assert not capture.add(b"defg")
    assert bytes(capture.data) == b"abcde" and capture.truncated
    assert capture.text() == "abcde"
    assert not capture.add(b"more") and bytes(capture.data) == b"abcde"


def test_text_replaces_what_is_not_utf8() -> None:
    capture = Capture(cap=64)
    capture.add(b"ok \xff")
    assert capture.text() == "ok \ufffd" and capture.binary
