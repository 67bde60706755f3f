"""Attacks by a hostile submitter, through the API, against the real stack.

The stacks are the end-to-end ones (tests/e2e): `nixjail serve` as a user
runs it, real dockerd, nix and nsjail."""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
# The end-to-end stack, and the helpers of the API's and the front ends' tests
# (attacks on the compatibility front ends, tests/hostile/test_compat_*.py).
for helpers in ("e2e", "api", "compat"):
    if str(TESTS / helpers) not in sys.path:
        sys.path.insert(0, str(TESTS / helpers))
