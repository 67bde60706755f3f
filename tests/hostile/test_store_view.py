"""A submission reads the Nix store for what other submissions' environments
hold: a `shellHook` or an attribute of `mkShell` is a variable of the
environment script, and that script (and the `.drv`) is a file in the store.

The container gets the environment's own closure as its whole /nix/store, so
another submission's environment is not there to read."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest
from serve_stack import serving, stage_stdout

pytestmark = [pytest.mark.docker, pytest.mark.nix]


def shell_nix(extra: str) -> str:
    return ("{ pkgs ? import <nixpkgs> {} }: pkgs.mkShell { packages = [ pkgs.busybox ]; "
            f"{extra} }}")


def closure_names(environment: dict) -> set[str]:
    proc = subprocess.run(
        ["nix", "--extra-experimental-features", "nix-command", "path-info", "--json",
         "--recursive", environment["inputs"], environment["script"]],
        capture_output=True, text=True, check=True, timeout=60)
    return {Path(info["path"]).name for info in json.loads(proc.stdout)}


def test_another_submissions_environment_is_not_in_the_store_a_submission_sees(
        tmp_path: Path) -> None:
    secret = f"hunter2-{uuid.uuid4().hex}"
    token = f"token-{uuid.uuid4().hex}"
    settings = "[cache_builder]\nenabled = true\n"
    for served in serving(tmp_path, settings_toml=settings):
        victim = served.api.submit(
            shell_nix=shell_nix(f'DB_PASSWORD = "{secret}"; '
                                f'shellHook = "export API_TOKEN={token}";'),
            run_sh='test -n "$DB_PASSWORD" && echo has its own secret')
        assert stage_stdout(victim) == "has its own secret\n", victim
        victim_script = Path(victim["environment"]["script"]).name

        attacker = served.api.submit(
            shell_nix=shell_nix(f'ATTACKER = "{uuid.uuid4().hex}";'),
            # Files only: busybox's applets are hundreds of links to one binary.
            run_sh="busybox ls -a /nix/store; echo ---; "
                   "busybox find /nix /work /tmp /etc /nixjail -type f -exec "
                   # Split, so that run.sh itself does not hold them.
                   f"busybox grep -l -e {secret[:8]}''{secret[8:]} -e {token[:6]}''{token[6:]} "
                   "{} + 2>/dev/null; echo end",
            limits={"run": {"cpu_time_s": 20, "wall_time_s": 30}})
        run = attacker["stages"]["run"]
        assert attacker["status"] == "done" and run["status"] == "ok", attacker
        listing, _, found = run["stdout"].partition("---\n")
        assert secret not in run["stdout"] and token not in run["stdout"]
        assert found == "end\n", found  # no file anywhere holds them
        seen = set(listing.split()) - {".", ".."}
        assert victim_script not in seen
        # Exactly its own closure, nothing of the host's store besides.
        assert seen == closure_names(attacker["environment"]), seen

        # The victim's own environment still has all of it.
        again = served.api.submit(shell_nix=victim["request"]["shell_nix"],
                                  run_sh='echo "$DB_PASSWORD $API_TOKEN"')
        assert stage_stdout(again) == f"{secret} {token}\n"
