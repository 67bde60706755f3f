"""The environments catalog in the cache builder: built at start, published,
kept by `nixjail gc`, and cached for the first submission that names it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from cb_helpers import salt
from test_builds import counted, one_job

from nixjail.cache_builder.service import CacheBuilder
from nixjail.cli.main import main
from nixjail.client import SpoolLeaseSource
from nixjail.models import StageStatus
from nixjail.nix import CATALOG_ROOTS
from nixjail.settings import CatalogEnvironment, Settings
from nixjail.spool import Spool, shell_nix_sha256


def catalog_builder(settings: Settings, spool: Spool, *entries: CatalogEnvironment,
                    ) -> CacheBuilder:
    settings.environments = list(entries)
    return CacheBuilder(settings, SpoolLeaseSource(spool, settings), spool=spool,
                        name="cb@catalog")


def test_the_catalog_is_built_at_start_kept_by_gc_and_cached_for_submissions(
        settings: Settings, spool: Spool, base: Path, counter: Path,
        caplog: pytest.LogCaptureFixture):
    tag = salt()
    name = f"counted-{tag[:8]}"
    shell_nix = counted(counter, tag)
    builder = catalog_builder(
        settings, spool,
        # Broken first: its failure must not keep the next entry from building.
        CatalogEnvironment(name="broken", shell_nix="{ this is not nix", run_sh="true"),
        CatalogEnvironment(name=name, shell_nix=shell_nix, run_sh="./main"))
    with caplog.at_level(logging.ERROR, logger="nixjail.cache_builder.service"):
        builder.serve()  # idle_exit_s 0: returns once the catalog and the queue are done
    assert builder.catalog_done.is_set()
    assert any("broken" in record.getMessage() for record in caplog.records), caplog.text
    assert len(counter.read_text().splitlines()) == 1, "the catalog entry was not built once"

    published = spool.published_environments()
    assert sorted(published) == [name]
    record = published[name]
    assert record.shell_nix_sha256 == shell_nix_sha256(shell_nix)
    env = record.environment
    catalog_roots = settings.cache_builder.roots_dir / CATALOG_ROOTS
    assert (catalog_roots / f"{env.key}-inputs").readlink() == Path(env.inputs)
    assert (catalog_roots / f"{env.key}-script").readlink() == Path(env.script)

    # Age out every root: the ordinary ones go, the catalog's stay. The
    # collection itself runs on an empty store of its own, so that it never
    # deletes what other tests on this host's store are building.
    gc_store = base / "gc-store"
    toml = base / "settings.toml"
    toml.write_text(f'[gc]\nstore = "local?root={gc_store}"\n'
                    f'roots_dir = "{settings.cache_builder.roots_dir.parent}"\n'
                    f'[cache_builder]\nroots_dir = "{settings.cache_builder.roots_dir}"\n')
    assert main(["gc", "--settings", str(toml), "--max-age", "0"]) == 0
    assert not (settings.cache_builder.roots_dir / f"{env.key}-inputs").exists()
    assert (catalog_roots / f"{env.key}-inputs").readlink() == Path(env.inputs)
    assert (catalog_roots / f"{env.key}-script").readlink() == Path(env.script)

    # The first submission naming it: cached, by the catalog's roots alone.
    first = spool.create(settings.validate_request(
        {"environment": name, "files": {"main": "#!/bin/sh\n"}}))
    one_job(builder)
    done = spool.get(first.id)
    deps = done.stages.dependencies
    assert deps is not None and deps.status is StageStatus.ok, deps
    assert deps.cached is True
    assert done.environment == env
    assert len(counter.read_text().splitlines()) == 1, "the submission rebuilt it"
    # ...and its ordinary roots are back.
    assert (settings.cache_builder.roots_dir / f"{env.key}-inputs").readlink() == Path(
        env.inputs)


def test_an_edited_entry_is_rebuilt_and_its_old_root_dropped(
        settings: Settings, spool: Spool, counter: Path):
    tag = salt()
    old = CatalogEnvironment(name="edited", shell_nix=counted(counter, tag), run_sh="true")
    catalog_builder(settings, spool, old).serve()
    old_key = spool.published_environments()["edited"].environment.key

    new_text = counted(counter, salt())
    new = CatalogEnvironment(name="edited", shell_nix=new_text, run_sh="true")
    catalog_builder(settings, spool, new).serve()
    record = spool.published_environments()["edited"]
    assert record.shell_nix_sha256 == shell_nix_sha256(new_text)
    assert record.environment.key != old_key
    catalog_roots = settings.cache_builder.roots_dir / CATALOG_ROOTS
    assert sorted(p.name for p in catalog_roots.iterdir()) == sorted(
        f"{record.environment.key}-{part}" for part in ("inputs", "script"))
    assert len(counter.read_text().splitlines()) == 2
