"""Fixtures of the CLI tests; the helpers live in cli_harness."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_harness import Api, start_api, stop_api


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    running = start_api(tmp_path)
    try:
        yield running
    finally:
        stop_api(running)
