"""The build environment: shell.nix built in a private store in the dependencies stage."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from init_helpers import limits, make_job, require_jail

HERE = Path(__file__).parent
STATIC_BASH = shutil.which("bash-static")
STATIC_BUSYBOX = "/bin/busybox"

@pytest.fixture(autouse=True)
def _tools() -> None:
    # scripts/bootstrap installs these: their absence fails, never skips.
    require_jail()
    assert shutil.which("nix") and STATIC_BASH and Path(STATIC_BUSYBOX).exists(), (
        "needs nix, bash-static and a static busybox (scripts/bootstrap)")

SHELL_NIX = """{ pkgs ? import <nixpkgs> {} }:
pkgs.mkShell { packages = [ pkgs.tools ]; shellHook = "export FROM_HOOK=yes"; }
"""


@pytest.fixture
def mininix():
    # Outside pytest's 0700 tmp dir: the jail mounts it read-only at the same path.
    base = Path(tempfile.mkdtemp(prefix="nixjail-mininix-"))
    base.chmod(0o755)
    shutil.copy(HERE / "fixtures" / "mininix" / "default.nix", base / "default.nix")
    shutil.copy(STATIC_BASH, base / "bash")
    shutil.copy(STATIC_BUSYBOX, base / "busybox")
    yield base
    shutil.rmtree(base, ignore_errors=True)


def test_build_environment(run_init, mininix):
    job = make_job(
        'echo "run: $(type -P sha256sum) $FROM_HOOK"',
        compile_sh='echo "compile: $(type -P cat)"',
        environment={"kind": "build", "shell_nix": SHELL_NIX, "nix_path": f"nixpkgs={mininix}"},
    )
    # The private store's database alone passes 1 MiB.
    job["limits"]["dependencies"] = limits(
        wall_time_s=30, memory_mib=512, processes=64, file_size_kib=65536
    )
    run = run_init(job)
    assert run.returncode == 0, run.stderr
    assert run.kinds == ["stage_started", "stage_finished"] * 3 + ["finished"]
    deps = run.result("dependencies")
    assert deps["status"] == "ok", deps
    assert deps["cached"] is False
    assert "building '/nix/store/" in deps["stderr"]  # the build log
    assert run.result("compile")["stdout"].startswith("compile: /nix/store/")
    out = run.result("run")["stdout"]
    assert out.startswith("run: /nix/store/") and out.endswith("-tools-1.0/bin/sha256sum yes\n")
    assert "cached" not in run.result("run")


def test_build_failure_skips_the_rest(run_init, mininix):
    job = make_job(
        "echo never",
        compile_sh="echo never",
        environment={
            "kind": "build",
            "shell_nix": SHELL_NIX.replace("pkgs.tools", "pkgs.nope"),
            "nix_path": f"nixpkgs={mininix}",
        },
    )
    job["limits"]["dependencies"] = limits(file_size_kib=65536)
    run = run_init(job)
    assert run.returncode == 0
    deps = run.result("dependencies")
    assert deps["status"] == "nonzero_exit"
    assert "nope" in deps["stderr"]
    assert run.result("compile")["status"] == "skipped"
    assert run.result("run")["status"] == "skipped"
