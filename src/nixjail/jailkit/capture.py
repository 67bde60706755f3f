"""Output of a jailed run, kept up to a cap, and whether it is printable text."""

from __future__ import annotations

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

    @property
    def binary(self) -> bool:
        return is_binary(bytes(self.data), cut=self.truncated)
