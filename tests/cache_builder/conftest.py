"""Fixtures of the cache-builder tests: a spool, settings and a builder per test."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cb_helpers import FIXTURE_NIXPKGS, nsjail_binary, require_host

from nixjail.cache_builder.service import CacheBuilder
from nixjail.client import SpoolLeaseSource
from nixjail.settings import Settings
from nixjail.spool import Spool


@pytest.fixture
def base() -> Iterator[Path]:
    require_host()
    # Not under tmp_path (mode 0700): nsjail mounts job directories as the
    # jail's user, and nixbld users append to counter files here.
    directory = Path(tempfile.mkdtemp(prefix="nixjail-cb-test-"))
    directory.chmod(0o711)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def counter(base: Path) -> Path:
    """A file the fixture's `counted` package appends to on each real build
    (the `settings` give its directory to the builds' sandbox)."""
    shared = base / "counters"
    shared.mkdir(exist_ok=True)
    shared.chmod(0o1777)
    file = shared / "count"
    file.touch()
    file.chmod(0o666)
    return file


@pytest.fixture
def settings(base: Path) -> Settings:
    settings = Settings(spool_dir=base / "spool", run_dir=base / "run", lease_s=30)
    cb = settings.cache_builder
    cb.enabled = True
    cb.nixpkgs = FIXTURE_NIXPKGS
    cb.roots_dir = base / "gcroots" / "environments"
    cb.nsjail = nsjail_binary()
    cb.idle_exit_s = 0
    # These tests are of the cache builder finding a built environment itself,
    # so every submission goes to it (the spool's reuse has tests of its own).
    cb.reuse_built_s = 0
    # The one host directory builds see: the `counted` package's counters.
    cb.sandbox_paths = [str(base / "counters")]
    (base / "counters").mkdir(mode=0o1777, exist_ok=True)
    return settings


@pytest.fixture
def spool(settings: Settings) -> Spool:
    return Spool.from_settings(settings)


@pytest.fixture
def builder(settings: Settings, spool: Spool) -> CacheBuilder:
    return CacheBuilder(settings, SpoolLeaseSource(spool, settings), spool=spool,
                        name="cache-builder@test")
