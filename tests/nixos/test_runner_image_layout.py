"""A runner image laid out as nix/runner-image.nix lays it out: the jails'
tools (bash, nix) are links into /nix/store, the image lists those store
paths in /opt/nixjail/image-store-paths and registers them in its Nix
database (includeNixDB). A submission that builds its own environment gets a
private store at /nix in its jails; the tools must survive that.

The image is the Debian runner image (scripts/bootstrap builds it) with bash
and nix moved into /nix/store and linked back, as a Nix-built image has them.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "container_init"))
from init_helpers import limits, make_job, parse_lines  # noqa: E402

pytestmark = [pytest.mark.docker]

FIXTURE_NIXPKGS = REPO / "tests" / "fixtures" / "nixpkgs"

# Moves a command into a store path of its own and links it back, like the
# links dockerTools makes; lists and registers the store paths.
LAYOUT = r"""
set -eu
into_store() {
  name=$1; shift
  hash=$(printf %s "$name" | sha256sum | cut -c1-32 | tr e w)
  dir=/nix/store/$hash-$name
  mkdir -p "$dir/bin"
  for file in "$@"; do
    mv "$file" "$dir/bin/"
    ln -s "$dir/bin/$(basename "$file")" "$file"
  done
  echo "$dir" >>/opt/nixjail/image-store-paths
}
into_store bash-5.2.15 /usr/bin/bash
into_store nix-2.8.0 /usr/bin/nix
for path in $(cat /opt/nixjail/image-store-paths); do printf '%s\n\n0\n' "$path"; done |
  nix-store --register-validity
test "$(readlink /usr/bin/bash)" = "$(head -n1 /opt/nixjail/image-store-paths)/bin/bash"
"""


def base_image() -> str:
    done = subprocess.run([str(REPO / "images" / "runner" / "build")], capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="module")
def store_layout_image() -> str:
    base = base_image()
    dockerfile = f"FROM {base}\nCOPY layout.sh /tmp/layout.sh\nRUN sh /tmp/layout.sh\n"
    tag = "nixjail-runner-store-layout:" + hashlib.sha256(
        (dockerfile + LAYOUT).encode()).hexdigest()[:16]
    with tempfile.TemporaryDirectory() as context:
        (Path(context) / "Dockerfile").write_text(dockerfile)
        (Path(context) / "layout.sh").write_text(LAYOUT)
        done = subprocess.run(["docker", "build", "-q", "--network", "none", "-t", tag, context],
                              capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return tag


def run_in(image: str, job: dict) -> tuple[int, list[dict], str]:
    argv = [
        "docker", "run", "-i", "--rm", "--network", "none", "--read-only",
        "--tmpfs", "/work:size=64m,exec", "--tmpfs", "/tmp",
        "--tmpfs", "/var/lib/nixjail-init:size=512m,exec",
        "-e", "NIXJAIL_STATE_DIR=/var/lib/nixjail-init",
        "--security-opt", "seccomp=unconfined", "--security-opt", "systempaths=unconfined",
        "--memory", "768m", "--memory-swap", "768m", "--pids-limit", "256",
        "-v", f"{FIXTURE_NIXPKGS}:/opt/nixjail/nixpkgs:ro", image,
    ]
    done = subprocess.run(argv, input=json.dumps(job).encode() + b"\n", capture_output=True,
                          timeout=120)
    return done.returncode, parse_lines(done.stdout), done.stderr.decode()


def shell_in(image: str, script: str) -> str:
    """What `sh -c script` prints in a container of `image` (no network); it must succeed."""
    shown = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", image,
         "-c", script], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    return shown.stdout


def result(events: list[dict], stage: str) -> dict:
    return next(e["result"] for e in events if e.get("stage") == stage and "result" in e)


def test_the_image_keeps_its_tools_in_the_store(store_layout_image: str) -> None:
    lines = shell_in(store_layout_image, "readlink -f /bin/bash /usr/bin/nix-build; "
                     "nix-store --check-validity $(cat /opt/nixjail/image-store-paths) "
                     "&& echo valid").split()
    assert lines[0].startswith("/nix/store/") and lines[0].endswith("-bash-5.2.15/bin/bash")
    assert lines[1].startswith("/nix/store/") and lines[1].endswith("-nix-2.8.0/bin/nix")
    assert lines[2] == "valid"


def test_a_build_in_the_container_keeps_the_images_tools(store_layout_image: str) -> None:
    job = make_job(
        'echo "bash: $(readlink -f /bin/bash)"; echo "tool: $(type -P busybox)"',
        compile_sh="echo compiled",
        environment={
            "kind": "build",
            "shell_nix": "{ pkgs ? import <nixpkgs> {} }:\n"
            "pkgs.mkShell { packages = [ pkgs.busybox ]; }",
            "nix_path": "nixpkgs=/opt/nixjail/nixpkgs",
        },
    )
    job["limits"]["dependencies"] = limits(wall_time_s=60, memory_mib=512, processes=128,
                                           file_size_kib=262144)
    code, events, stderr = run_in(store_layout_image, job)
    assert code == 0, stderr
    deps = result(events, "dependencies")
    assert deps["status"] == "ok", deps
    # Nix built into the private store beside the image's own paths.
    assert "building '/nix/store/" in deps["stderr"], deps
    assert result(events, "compile")["stdout"] == "compiled\n"
    run = result(events, "run")
    assert run["status"] == "ok", run
    bash, tool = run["stdout"].splitlines()
    # The run jail's bash is nixjail's static copy, not the image's store path.
    assert bash == "bash: /bin/bash", run
    assert tool.startswith("tool: /nix/store/") and tool.endswith("/bin/busybox")


def test_the_image_carries_the_jail_kit_beside_container_init() -> None:
    # Both images (images/runner/build, nix/runner-image.nix) put src/nixjail/jailkit at
    # /opt/nixjail/jailkit, where nixjail_init.py finds it as a top-level package.
    kit = REPO / "src" / "nixjail" / "jailkit"
    expected = {path.name: hashlib.sha256(path.read_bytes()).hexdigest()
                for path in sorted(kit.glob("*.py"))}
    shown = shell_in(base_image(), "cd /opt/nixjail/jailkit && sha256sum *.py && "
                     "cd /opt/nixjail/container_init && python3 -I -c 'import sys; "
                     "sys.path.append(\"/opt/nixjail\"); import jailkit.seccomp'")
    found = {name: digest for digest, name in (line.split() for line in shown.splitlines())}
    assert found == expected
    nix = (REPO / "nix" / "runner-image.nix").read_text()
    assert "cp -r ${jailkit} $out/opt/nixjail/jailkit" in nix
    assert "root = ../src/nixjail/jailkit;" in nix


def test_both_images_put_a_static_bash_where_container_init_copies_it_from() -> None:
    shown = shell_in(base_image(), "readlink -f /opt/nixjail/static/bash && "
                     "/opt/nixjail/static/bash -c 'echo $BASH_VERSION'")
    assert shown.splitlines()[0] == "/usr/bin/bash-static", shown
    nix = (REPO / "nix" / "runner-image.nix").read_text()
    assert "ln -s ${pkgsStatic.bash}/bin/bash $out/opt/nixjail/static/bash" in nix
