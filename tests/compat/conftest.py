"""Fixtures of the compatibility front ends' tests."""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
# The end-to-end stack and the API tests' helpers, shared with those suites.
for helpers in (TESTS / "e2e", TESTS / "api"):
    if str(helpers) not in sys.path:
        sys.path.insert(0, str(helpers))
