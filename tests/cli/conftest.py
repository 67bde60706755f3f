"""Fixtures of the CLI tests; the helpers live in cli_harness."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_harness import Api, start_api, stop_api

# The exit codes that need a real run (the limits, an environment that does not
# build) use the end-to-end stack: real API, runner, dockerd and runner image.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from e2e_stack import stack  # noqa: F401 - the real stack fixture


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    running = start_api(tmp_path)
    try:
        yield running
    finally:
        stop_api(running)
