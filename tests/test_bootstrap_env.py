"""What scripts/bootstrap promises the rest of the suite: nsjail on PATH, a
nix-daemon, the fixture nixpkgs (built through the daemon, usable by
print-dev-env) and the runner image. Each check is fast: nothing here builds
the image or restarts a daemon."""

import json
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURE_NIXPKGS = REPO / "tests" / "fixtures" / "nixpkgs"
IMAGE = "nixjail-runner:latest"
NIX = ("nix", "--extra-experimental-features", "nix-command")
DOCKER_RUN = ("docker", "run", "--rm", "--network", "none")
SHELL_NIX = """{ pkgs ? import <nixpkgs> {} }:
pkgs.mkShell {
  packages = [ pkgs.busybox pkgs.hello ];
  GREETING = "two words";
  shellHook = "echo hook-ran";
}
"""


def run(*argv: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout=60):
    proc = subprocess.run(
        argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout, check=False
    )
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}:\n{proc.stderr}"
    return proc.stdout


def nix_env() -> dict[str, str]:
    return {**os.environ, "NIX_REMOTE": "daemon", "NIX_PATH": f"nixpkgs={FIXTURE_NIXPKGS}"}


def test_nsjail_on_path_runs_a_jailed_command():
    assert shutil.which("nsjail"), "nsjail is not on PATH: run scripts/bootstrap"
    run("nsjail", "-Mo", "-Q", "--chroot", "/", "--", "/bin/true")


@pytest.mark.nix
def test_nix_daemon_answers_on_its_socket():
    assert Path("/nix/var/nix/daemon-socket/socket").is_socket()
    run(*NIX, "store", "ping", "--store", "daemon")


@pytest.mark.nix
def test_fixture_nixpkgs_builds_busybox_through_the_daemon():
    out = run("nix-build", "<nixpkgs>", "-A", "busybox", "--no-out-link", env=nix_env()).strip()
    assert out.startswith("/nix/store/") and out.endswith("-busybox")
    # The package carries its applets as links, so `cat`, `sh`... are on PATH.
    assert (Path(out) / "bin" / "sh").exists()
    assert run(f"{out}/bin/busybox", "echo", "hi") == "hi\n"


@pytest.mark.nix
def test_print_dev_env_script_puts_the_packages_on_path(tmp_path):
    (tmp_path / "shell.nix").write_text(SHELL_NIX)
    script = run(*NIX, "print-dev-env", "-f", "shell.nix", env=nix_env(), cwd=tmp_path)
    (tmp_path / "env.sh").write_text(script)
    # A bare environment, as a stage in a container gets: only the script's PATH works.
    bash = shutil.which("bash")
    commands = 'source ./env.sh; busybox echo ok; hello; echo "$GREETING"'
    # TMPDIR: the script makes its NIX_BUILD_TOP with `mktemp -d -t`.
    bare_env = {"PATH": "/nonexistent", "HOME": str(tmp_path), "TMPDIR": str(tmp_path)}
    out = run(bash, "-c", commands, env=bare_env, cwd=tmp_path)
    assert out == "hook-ran\nok\nHello, world!\ntwo words\n"


@pytest.mark.nix
def test_counted_package_counts_real_builds():
    # Builds run as nixbld users through the daemon: the counter must be theirs
    # to append to, which a pytest tmp_path (0700 parents) is not.
    scratch = Path(tempfile.mkdtemp(prefix="nixjail-counter-", dir="/tmp"))
    try:
        scratch.chmod(0o1777)
        counter = scratch / "builds"
        counter.touch(mode=0o666)
        counter.chmod(0o666)
        salt = uuid.uuid4().hex

        def build(salt):
            args = f'counterFile = "{counter}"; salt = "{salt}";'
            expr = f"with import <nixpkgs> {{}}; counted {{ {args} }}"
            return run("nix-build", "-E", expr, "--no-out-link", env=nix_env())

        first = build(salt).strip()
        assert build(salt).strip() == first  # already in the store: not built again
        build(salt + "-other")
        assert counter.read_text().splitlines()[0] == first
        assert len(counter.read_text().splitlines()) == 2
    finally:
        shutil.rmtree(scratch)


@pytest.mark.docker
def test_runner_image_is_present_with_its_entry_point():
    config = json.loads(run("docker", "image", "inspect", IMAGE))[0]["Config"]
    assert config["Labels"]["org.nixjail.role"] == "runner-image"
    entry = "python3 -I -u /opt/nixjail/container_init/nixjail_init.py"
    assert config["Entrypoint"] == entry.split()


@pytest.mark.docker
def test_runner_image_runs_nsjail_and_nix():
    # What container init needs from Docker to start a jail, and no more.
    jail_opts = [
        *("--security-opt", "seccomp=unconfined"),
        *("--security-opt", "systempaths=unconfined"),
    ]
    jailed_true = ["-Mo", "-Q", "--chroot", "/", "--", "/bin/true"]
    run(*DOCKER_RUN, *jail_opts, "--entrypoint", "nsjail", IMAGE, *jailed_true)
    assert run(*DOCKER_RUN, "--entrypoint", "nix", IMAGE, "--version").startswith("nix (Nix) 2.")


@pytest.mark.docker
@pytest.mark.nix
def test_container_gets_a_dev_env_through_the_host_daemon(tmp_path):
    # The fixture's builds only need /nix/store and the fixture directory itself.
    (tmp_path / "shell.nix").write_text(SHELL_NIX)
    mounts = [
        *("-v", "/nix/store:/nix/store:ro"),
        *("-v", "/nix/var/nix/daemon-socket:/nix/var/nix/daemon-socket"),
        *("-v", f"{FIXTURE_NIXPKGS}:/fixture:ro"),
        *("-v", f"{tmp_path}:/work:ro"),
    ]
    nix_vars = ["-e", "NIX_REMOTE=daemon", "-e", "NIX_PATH=nixpkgs=/fixture"]
    script = "cd /work && nix print-dev-env -f shell.nix > /tmp/env.sh && . /tmp/env.sh && hello"
    out = run(*DOCKER_RUN, *mounts, *nix_vars, "--entrypoint", "bash", IMAGE, "-c", script)
    assert out == "hook-ran\nHello, world!\n"  # sourcing the script runs the shellHook
