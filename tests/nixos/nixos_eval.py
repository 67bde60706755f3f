"""Evaluating nixos/module.nix with nixpkgs' lib (tests/nixos/eval.nix).

nixpkgs' lib comes from `$NIXJAIL_NIXPKGS_LIB` (its lib/ directory, or a
nixpkgs checkout holding one), else `../shared/nixpkgs-lib` beside the
repository, else the flake's locked nixpkgs when Nix can fetch it. With
none of them the tests fail: the module is never left unevaluated.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
EVAL = HERE / "eval.nix"
EXAMPLES = REPO / "nixos" / "examples"
NIX_OPTIONS = ["--option", "substituters", ""]

# The unit templates' helpers live beside the tests that boot them.
sys.path.insert(0, str(REPO / "tests" / "systemd"))


def _lib_in(directory: Path) -> Path | None:
    for candidate in (directory / "lib", directory):
        if (candidate / "default.nix").is_file() and (candidate / "modules.nix").is_file():
            return candidate
    return None


def _locked_nixpkgs_lib() -> tuple[Path | None, str]:
    locked = json.loads((REPO / "flake.lock").read_text())["nodes"]["nixpkgs"]["locked"]
    url = (f"https://github.com/{locked['owner']}/{locked['repo']}/archive/"
           f"{locked['rev']}.tar.gz")
    done = subprocess.run(
        ["nix-instantiate", "--eval", "--json", *NIX_OPTIONS, "-E",
         f'builtins.toString (builtins.fetchTarball {{ url = "{url}"; '
         f'sha256 = "{locked["narHash"]}"; }})'],
        capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        return None, done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"
    return _lib_in(Path(json.loads(done.stdout))), ""


def find_nixpkgs_lib() -> Path:
    tried = []
    if os.environ.get("NIXJAIL_NIXPKGS_LIB"):
        found = _lib_in(Path(os.environ["NIXJAIL_NIXPKGS_LIB"]))
        if found:
            return found
        tried.append(f"$NIXJAIL_NIXPKGS_LIB={os.environ['NIXJAIL_NIXPKGS_LIB']}: no lib there")
    shared = REPO.parent / "shared" / "nixpkgs-lib"
    found = _lib_in(shared)
    if found:
        return found
    tried.append(f"{shared}: missing")
    found, problem = _locked_nixpkgs_lib()
    if found:
        return found
    tried.append(f"the flake's locked nixpkgs: {problem}")
    raise RuntimeError("no nixpkgs lib to evaluate the module with:\n  " + "\n  ".join(tried))


class Evaluation:
    def __init__(self, lib: Path) -> None:
        self.lib = lib

    def run(self, host: Path | str, *extra: str) -> subprocess.CompletedProcess[str]:
        """nix-instantiate of eval.nix for `host` (a file) and extra modules (Nix text)."""
        argv = ["nix-instantiate", "--eval", "--strict", "--json", *NIX_OPTIONS, str(EVAL),
                "--argstr", "libDir", str(self.lib), "--arg", "host", str(Path(host).resolve())]
        if extra:
            argv += ["--arg", "extra", "[ " + " ".join(f"({text})" for text in extra) + " ]"]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120)

    def __call__(self, host: Path | str, *extra: str) -> dict:
        done = self.run(host, *extra)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def error(self, host: Path | str, *extra: str) -> str:
        """The error message of an evaluation that must fail."""
        done = self.run(host, *extra)
        assert done.returncode != 0, f"evaluated, but should have failed: {done.stdout[:500]}"
        return done.stderr
