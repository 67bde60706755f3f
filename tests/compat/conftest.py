"""Fixtures of the compatibility front ends' tests."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parents[1]
# The end-to-end stack and the API tests' helpers, shared with those suites.
for helpers in (TESTS / "e2e", TESTS / "api"):
    if str(helpers) not in sys.path:
        sys.path.insert(0, str(helpers))

from compat_helpers import CompatApi, start_compat_api  # noqa: E402 (after the path)


@pytest.fixture
def compat_api(tmp_path: Path) -> Iterator[Callable[..., CompatApi]]:
    """Starts real APIs (`start_compat_api`'s options), each stopped after the test."""
    stops: list[Callable[[], None]] = []

    def start(**kwargs: Any) -> CompatApi:
        api, stop = start_compat_api(tmp_path / f"api{len(stops)}", **kwargs)
        stops.append(stop)
        return api

    yield start
    for stop in stops:
        stop()
