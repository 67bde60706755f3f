"""Fixtures of the API tests: real servers on loopback around spools in temp dirs."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from api_helpers import Api, start_server

# The figures of the fault tests (tests/e2e/reliability.py) are recorded alike.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))


@pytest.fixture
def make_api(tmp_path: Path) -> Iterator[Callable[..., Api]]:
    stops = []

    def make(**kwargs: Any) -> Api:
        api, stop = start_server(tmp_path / f"api{len(stops)}", **kwargs)
        stops.append(stop)
        return api

    yield make
    for stop in stops:
        stop()


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    return make_api()


@pytest.fixture(scope="module")
def shared_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One server for the generated-input tests, which make many requests."""
    api, stop = start_server(tmp_path_factory.mktemp("shared"), max_wait_s=0.2)
    yield api
    stop()
