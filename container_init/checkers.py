"""The built-in checkers: does a test case's output match its expected output?

Standard library only: this runs in container init. docs/judging.md says what each
one ignores; the custom checker is a jailed script (see nixjail_init.py).
"""

from __future__ import annotations

import math

# A message quotes at most this much of a line or token.
QUOTE_CHARS = 80
WHITE_SPACE = b" \t\r\f\v"


def _quote(data: bytes) -> str:
    text = data.decode("utf-8", "replace")
    return repr(text if len(text) <= QUOTE_CHARS else text[:QUOTE_CHARS] + "…")


def _lines(data: bytes) -> list[bytes]:
    lines = [line.rstrip(WHITE_SPACE) for line in data.split(b"\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _compare_sequences(what: str, expected: list[bytes], got: list[bytes],
                       same) -> tuple[bool, str]:
    for index, (want, have) in enumerate(zip(expected, got, strict=False)):
        if not same(want, have):
            return False, f"{what} {index + 1}: expected {_quote(want)}, got {_quote(have)}"
    if len(expected) != len(got):
        return False, (f"expected {len(expected)} {what}s, got {len(got)}")
    return True, ""


def _number(token: bytes) -> float | None:
    try:
        return float(token)
    except ValueError:
        return None


def _close(abs_tol: float, rel_tol: float):
    def same(want: bytes, have: bytes) -> bool:
        a, b = _number(want), _number(have)
        if a is None or b is None or math.isnan(a) or math.isnan(b):
            return want == have
        return math.isclose(a, b, rel_tol=rel_tol, abs_tol=abs_tol)
    return same


def check(kind: str, expected: bytes, output: bytes, *, abs_tol: float = 1e-6,
          rel_tol: float = 1e-6) -> tuple[bool, str]:
    """(accepted, message): the message says where the output first differs."""
    if kind == "exact":
        if output == expected:
            return True, ""
        at = next((i for i, (a, b) in enumerate(zip(expected, output, strict=False))
                   if a != b), min(len(expected), len(output)))
        return False, (f"differs at byte {at}: expected {len(expected)} bytes, got "
                       f"{len(output)}")
    if kind == "lines":
        return _compare_sequences("line", _lines(expected), _lines(output),
                                  lambda a, b: a == b)
    if kind == "tokens":
        return _compare_sequences("token", expected.split(), output.split(),
                                  lambda a, b: a == b)
    if kind == "float":
        return _compare_sequences("token", expected.split(), output.split(),
                                  _close(abs_tol, rel_tol))
    raise ValueError(f"no built-in checker {kind!r}")
