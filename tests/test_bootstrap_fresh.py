"""scripts/bootstrap on a machine that was never set up: its Nix step, run in a
clean Debian container (the runner's debootstrap base: nix-bin and nothing
else of Nix's, no `nixbld` group), makes the build users and a daemon that
builds a fixture derivation as one of them.

This machine keeps whatever an earlier run created; this container does not,
so a step bootstrap forgot fails here even where the host test suite passes.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUNNER_IMAGE = "nixjail-runner:latest"

pytestmark = pytest.mark.docker

# Inside the container: the repository read-only at /repo, nothing started.
SCRIPT = r"""
set -euo pipefail
if getent group nixbld >/dev/null; then echo "not clean: nixbld exists"; exit 3; fi
# Containers share the host's user ids, and a Nix daemon kills every process of
# a build user's uid before it builds as that user. Bootstrap would give this
# container's build users the host's own uids (the same system range, counted
# down from the same start), so each daemon would kill the other's builds.
# Taking the top of the range first gives them uids of their own.
for i in $(seq 40); do useradd --system --no-create-home "taken$i"; done
/repo/scripts/bootstrap nix 2>/tmp/first.log
/repo/scripts/bootstrap nix 2>/tmp/second.log
export NIX_REMOTE=daemon NIX_PATH=nixpkgs=/repo/tests/fixtures/nixpkgs
out=$(nix-build --no-out-link -E \
  'with import <nixpkgs> {}; runCommand "who-built-me" {} "id -un > $out; id -gn >> $out"')
python3 - "$out" <<'PY'
import grp, json, pwd, sys
users = [u for u in pwd.getpwall() if u.pw_name.startswith("nixbld")]
print(json.dumps({
    "build": open(sys.argv[1]).read().split(),
    "group_members": sorted(grp.getgrnam("nixbld").gr_mem),
    "users": len(users),
    "shells": sorted({u.pw_shell for u in users}),
    "first": open("/tmp/first.log").read(),
    "second": open("/tmp/second.log").read(),
}))
PY
"""


def base_image() -> str:
    """The debootstrap base the runner image was built on (images/runner/build)."""
    found = subprocess.run(
        ["docker", "image", "inspect", RUNNER_IMAGE, "--format",
         '{{index .Config.Labels "org.nixjail.base"}}'],
        capture_output=True, text=True, check=False)
    assert found.returncode == 0 and found.stdout.strip(), (
        f"no {RUNNER_IMAGE} with its base label: run scripts/bootstrap\n{found.stderr}")
    return found.stdout.strip()


def test_bootstrap_makes_nix_build_through_its_daemon_on_a_clean_debian() -> None:
    if not (REPO / "tests" / "fixtures" / "nixpkgs" / "bin" / "busybox").exists():
        pytest.fail("the fixture nixpkgs is not prepared: run scripts/bootstrap")
    run = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "-v", f"{REPO}:/repo:ro",
         "--entrypoint", "bash", base_image(), "-c", SCRIPT],
        capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, f"exit {run.returncode}\n{run.stdout}\n{run.stderr}"
    seen = json.loads(run.stdout)
    # Built by the daemon as a build user, not as root.
    assert seen["build"] == ["nixbld1", "nixbld"], seen
    assert seen["users"] >= 8
    assert len(seen["group_members"]) == seen["users"]  # each a member, as Nix wants
    assert seen["shells"] == ["/usr/sbin/nologin"]
    assert "creating the group nixbld" in seen["first"]
    assert "starting nix-daemon" in seen["first"]
    # A second run finds everything in place and changes nothing.
    assert "creating" not in seen["second"] and "starting" not in seen["second"], seen
