"""Environments built once by the cache builder, published to a signed binary
cache, and substituted by workers into a store of their own."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import pytest
from e2e_stack import Stack, containers_left, counted_shell, counter_file

pytestmark = [pytest.mark.docker, pytest.mark.nix]


def narinfos(cache_dir: Path) -> set[str]:
    return {path.name for path in cache_dir.glob("*.narinfo")}


def store_hash(path: str) -> str:
    return Path(path).name.split("-", 1)[0]


def test_the_second_submission_reuses_the_environment(cached_stack: Stack) -> None:
    counter = counter_file()
    shell = counted_shell(counter, secrets.token_hex(8))
    first = cached_stack.submit(shell_nix=shell, run_sh="counted; busybox echo ran")
    assert first["status"] == "done", first
    deps = first["stages"]["dependencies"]
    assert (deps["status"], deps["cached"]) == ("ok", False), deps
    assert first["stages"]["run"]["stdout"] == "counted\nran\n"
    assert len(counter.read_text().splitlines()) == 1

    environment = first["environment"]
    cache = cached_stack.cache
    for path in (environment["inputs"], environment["script"]):
        narinfo = cache.cache_dir / f"{store_hash(path)}.narinfo"
        assert narinfo.exists(), f"{path} was not published"
        assert "Sig: nixjail-test-1:" in narinfo.read_text()
        # The worker substituted it into its own store, not the builder's.
        assert (cache.worker_store_root / path.lstrip("/")).exists()

    second = cached_stack.submit(shell_nix=shell, run_sh="counted")
    assert second["status"] == "done", second
    deps = second["stages"]["dependencies"]
    assert (deps["status"], deps["cached"]) == ("ok", True), deps
    assert second["environment"] == environment
    assert second["stages"]["run"]["stdout"] == "counted\n"
    assert len(counter.read_text().splitlines()) == 1, "the environment was built again"
    assert not containers_left(cached_stack.runner_name)


def test_identical_environments_at_once_are_built_once(cached_stack: Stack) -> None:
    counter = counter_file()
    shell = counted_shell(counter, secrets.token_hex(8))
    ids = []
    for _ in range(3):
        status, submission = cached_stack.request(
            "POST", "/v1/submissions", {"shell_nix": shell, "run_sh": "counted"})
        assert status == 202, submission
        ids.append(submission["id"])
    ended = [cached_stack.wait(submission_id) for submission_id in ids]
    assert [s["status"] for s in ended] == ["done"] * 3, ended
    assert sorted(s["stages"]["dependencies"]["cached"] for s in ended) == [False, True, True]
    assert len(counter.read_text().splitlines()) == 1


def test_no_cache_builds_in_the_container_and_leaves_no_trace(cached_stack: Stack) -> None:
    salt = secrets.token_hex(8)
    shell = ("{ pkgs ? import <nixpkgs> {} }: pkgs.mkShell { packages = [ pkgs.busybox "
             f'(pkgs.runCommand "private-{salt}" {{}} "mkdir -p $out/bin") ]; }}')
    before = narinfos(cached_stack.cache.cache_dir)
    submission = cached_stack.submit(shell_nix=shell, cache=False, run_sh="busybox echo ok")
    assert submission["status"] == "done", submission
    deps = submission["stages"]["dependencies"]
    assert (deps["status"], deps["cached"]) == ("ok", False)
    assert "private-" in deps["stderr"] + deps["stdout"], "the build log is the stage's output"
    assert submission["environment"] is None
    assert narinfos(cached_stack.cache.cache_dir) == before
    for store in (Path("/nix/store"), cached_stack.cache.worker_store_root / "nix" / "store"):
        if store.exists():
            assert not [name for name in os.listdir(store) if salt in name], store


def test_a_worker_refuses_an_environment_signed_by_another_key(wrong_key_stack: Stack) -> None:
    counter = counter_file()
    submission = wrong_key_stack.submit(shell_nix=counted_shell(counter, secrets.token_hex(8)),
                                        run_sh="counted")
    assert submission["status"] == "error", submission
    assert "sign" in submission["error"], submission["error"]
    assert submission["stages"]["dependencies"]["status"] == "ok"
    assert submission["stages"]["run"]["status"] == "skipped"
    assert not containers_left(wrong_key_stack.runner_name)


def test_without_a_cache_builder_the_worker_builds_after_the_wait(
        builderless_stack: Stack) -> None:
    started = time.monotonic()
    submission = builderless_stack.submit(run_sh="busybox echo built here")
    assert submission["status"] == "done", submission
    assert time.monotonic() - started >= 2, "it should wait for a cache builder first"
    deps = submission["stages"]["dependencies"]
    assert (deps["status"], deps["cached"]) == ("ok", False)
    assert submission["environment"] is None
    assert submission["stages"]["run"]["stdout"] == "built here\n"
