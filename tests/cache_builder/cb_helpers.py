"""Helpers of the cache-builder tests: real nix-daemon, real nsjail, no mocks."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from nixjail.models import ResolvedLimits, SubmissionRequest

REPO = Path(__file__).resolve().parents[2]
FIXTURE_NIXPKGS = REPO / "tests" / "fixtures" / "nixpkgs"


def nsjail_binary() -> str | None:
    return os.environ.get("NIXJAIL_NSJAIL") or shutil.which("nsjail") or (
        "/usr/local/bin/nsjail" if os.path.exists("/usr/local/bin/nsjail") else None)


def nix_daemon_up() -> bool:
    try:
        return subprocess.run(
            ["nix", "--extra-experimental-features", "nix-command", "store", "ping",
             "--store", "daemon"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def require_host() -> None:
    """scripts/bootstrap provides all of this: a missing piece fails the test,
    never skips it, so a broken set-up cannot pass as green."""
    if os.geteuid() != 0:
        pytest.fail("the cache builder needs root (nsjail user mapping, cgroups)")
    if nsjail_binary() is None:
        pytest.fail("nsjail is not installed (scripts/bootstrap)")
    if not nix_daemon_up():
        pytest.fail("no nix-daemon (scripts/bootstrap)")
    if not (FIXTURE_NIXPKGS / "bin" / "busybox").exists():
        pytest.fail("the fixture nixpkgs lacks its binaries (scripts/bootstrap)")


def salt() -> str:
    """Unique per call: tests share the store, not their derivations."""
    return uuid.uuid4().hex


def limits(**changes: float) -> ResolvedLimits:
    base = dict(wall_time_s=30, cpu_time_s=30, memory_mib=256, processes=64,
                output_kib=256, file_size_kib=65536)
    base.update(changes)
    return ResolvedLimits(**base)


def request(shell_nix: str, **dependency_limits: float) -> SubmissionRequest:
    return SubmissionRequest(shell_nix=shell_nix, run_sh="true",
                             limits={"dependencies": dependency_limits})


def shell(body: str = "", packages: str = "pkgs.hello", tag: str | None = None) -> str:
    """A shell.nix of the fixture nixpkgs that no other test shares."""
    return ("{ pkgs ? import <nixpkgs> {} }:\n"
            f"pkgs.mkShell {{ packages = [ {packages} ]; NIXJAIL_TEST = \"{tag or salt()}\";"
            f" {body} }}\n")
