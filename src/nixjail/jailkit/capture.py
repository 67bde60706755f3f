"""Output of a jailed run, kept up to a cap, and whether it is printable text."""

from __future__ import annotations

import base64
import codecs
import re

# Control characters but tab, newline and carriage return: C0, DEL and C1.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def is_binary(data: bytes, *, cut: bool = False) -> bool:
    """Whether `data` is not printable text: not UTF-8, or holding control characters.

    `cut`: the bytes end where a cap cut them, so a character split there is no fault.
    """
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    try:
        text = decoder.decode(data, final=not cut)
    except UnicodeDecodeError:
        return True
    return _CONTROL.search(text) is not None


def encode_output(data: bytes, *, cut: bool = False,
                  force_base64: bool = False) -> tuple[str, str]:
    """(text, encoding) for a result: UTF-8 text as it is, anything else
    (or everything, when asked) as base64, so no byte is ever replaced.

    `cut`: a character split by the cap at the end is dropped, not a reason for base64.
    """
    if not force_base64:
        decoder = codecs.getincrementaldecoder("utf-8")("strict")
        try:
            return decoder.decode(data, final=not cut), "utf-8"
        except UnicodeDecodeError:
            pass
    return base64.b64encode(data).decode(), "base64"


class Capture:
    """One output stream, kept up to `cap` bytes."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.data = bytearray()
        self.truncated = False

    def add(self, chunk: bytes) -> bool:
        """Keep what fits under the cap; return False once output went past it."""
        room = self.cap - len(self.data)
        self.data += chunk[: max(room, 0)]
        if len(chunk) > room:
            self.truncated = True
        return not self.truncated

    def text(self) -> str:
        return self.data.decode("utf-8", "replace")

    def encoded(self, *, force_base64: bool = False, note: bytes = b"") -> tuple[str, str]:
        """What was kept, and nixjail's `note` after it, as (text, encoding)."""
        data = bytes(self.data)
        if self.truncated and note:
            # The cap may have split a character: drop its start, so that text
            # with a note after it is still text.
            decoder = codecs.getincrementaldecoder("utf-8")("strict")
            try:
                decoder.decode(data)
                pending = len(decoder.getstate()[0])
                data = data[:len(data) - pending]
            except UnicodeDecodeError:
                pass
        return encode_output(data + note, cut=self.truncated and not note,
                             force_base64=force_base64)

    @property
    def binary(self) -> bool:
        return is_binary(bytes(self.data), cut=self.truncated)
