"""The Nix side, checked as far as this machine can without nixpkgs: every
file parses, the lock pins a nixpkgs revision, and the package, the module
and these tests agree on the unit templates in nixos/units/."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from systemd_machine import PLACEHOLDER, PLACEHOLDERS, REPO, UNITS_DIR

NIX_FILES = sorted(
    [REPO / "flake.nix"]
    + [path for directory in ("nix", "nixos", "vm-tests")
       for path in (REPO / directory).rglob("*.nix")])


def test_there_are_nix_files() -> None:
    names = {path.relative_to(REPO).as_posix() for path in NIX_FILES}
    assert {"flake.nix", "nix/package.nix", "nix/runner-image.nix", "nix/overlay.nix",
            "nixos/module.nix",
            "vm-tests/all-in-one.nix", "vm-tests/cache-and-worker.nix"} <= names


@pytest.mark.parametrize("path", NIX_FILES, ids=lambda path: path.relative_to(REPO).as_posix())
def test_parses(path: Path) -> None:
    done = subprocess.run(["nix-instantiate", "--parse", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_the_lock_pins_the_nixpkgs_the_flake_names() -> None:
    lock = json.loads((REPO / "flake.lock").read_text())
    assert lock["version"] == 7 and lock["root"] == "root"
    assert lock["nodes"]["root"]["inputs"] == {"nixpkgs": "nixpkgs"}
    node = lock["nodes"]["nixpkgs"]
    locked, original = node["locked"], node["original"]
    url = re.search(r'inputs\.nixpkgs\.url = "github:([^/]+)/([^/]+)/([^"]+)";',
                    (REPO / "flake.nix").read_text())
    assert url is not None
    assert (original["type"], original["owner"], original["repo"], original["ref"]) == (
        "github", *url.groups())
    assert (locked["type"], locked["owner"], locked["repo"]) == ("github", "NixOS", "nixpkgs")
    assert re.fullmatch(r"[0-9a-f]{40}", locked["rev"])
    assert re.fullmatch(r"sha256-[A-Za-z0-9+/]{43}=", locked["narHash"])
    assert isinstance(locked["lastModified"], int)


def test_the_package_fills_exactly_the_placeholders_of_the_templates() -> None:
    used = set()
    for template in UNITS_DIR.glob("*.in"):
        used |= set(PLACEHOLDER.findall(template.read_text()))
    assert used == PLACEHOLDERS
    package = (REPO / "nix" / "package.nix").read_text()
    filled = set(re.findall(r"--subst-var-by (\w+) ", package))
    assert filled == PLACEHOLDERS
    assert "nixos/units/*.in" in package


def test_the_module_enables_only_units_the_package_ships() -> None:
    module = (REPO / "nixos" / "module.nix").read_text()
    shipped = {template.name.removesuffix(".in") for template in UNITS_DIR.glob("*.in")}
    referenced = {f"{name}.{kind[:-1]}" for kind, name in
                  re.findall(r"systemd\.(services|sockets|timers)\.([\w-]+)", module)}
    # Units of its own: loading a Nix-built image into Docker, and restarting
    # the API for a changed tokens file (a credential), are NixOS's business.
    assert referenced - shipped == {"nixjail-runner-image.service",
                                    "nixjail-api-tokens.service"}
    assert {"nixjail-api.socket", "nixjail-api.service", "nixjail-runner.socket",
            "nixjail-runner.service", "nixjail-cache-builder.service",
            "nixjail-expire-leases.timer", "nixjail-expire-leases.service",
            "nixjail-gc.timer", "nixjail-gc.service"} <= referenced
