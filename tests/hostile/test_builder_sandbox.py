"""What a derivation builder of a `cache: true` shell.nix reaches on the cache
builder: it runs in the Nix sandbox of the job's own nix-daemon.

Each attack is a builder (busybox and bash from the fixture nixpkgs) that
prints what it found, one "attack: …" line each, then fails, so its log comes
back as the dependencies stage's stderr. Through the API against `nixjail
serve`; the stack's settings file, the spool (other jobs' shell.nix), the
host's processes and the API on loopback are what it must not reach, and
nothing it writes may stay on the host once the job ends.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from serve_stack import SHELL_NIX, Served, serving, stage_stdout

pytestmark = [pytest.mark.docker, pytest.mark.nix]

SETTINGS = "[cache_builder]\nenabled = true\n"
# A file name no one else uses, for the leftover hunt.
MARK = f"nixjail-leftover-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from serving(tmp_path_factory.mktemp("builder-sandbox"), settings_toml=SETTINGS)


def _attack(script: str) -> str:
    """A shell.nix whose one package's builder runs `script`, then fails."""
    body = script.replace("''", "'''").replace("${", "''${")
    return f"""{{ pkgs ? import <nixpkgs> {{}} }}:
let attack = derivation {{
  name = "builder-sandbox";
  system = builtins.currentSystem;
  builder = "${{pkgs.bash}}/bin/bash";
  PATH = "${{pkgs.busybox}}/bin";
  nonce = "{uuid.uuid4().hex}";
  args = [ "-c" ''{body}
exit 1'' ];
}};
in pkgs.mkShell {{ packages = [ attack ]; }}
"""


def _run(served: Served, script: str) -> str:
    ended = served.api.submit(shell_nix=_attack(script), run_sh="true")
    deps = ended["stages"]["dependencies"]
    assert ended["status"] == "failed", ended
    assert deps["status"] == "nonzero_exit", deps
    return "\n".join(line.split("> ", 1)[-1] for line in deps["stderr"].splitlines()
                     if "attack: " in line)


def _serving_benign(served: Served) -> None:
    benign = served.api.submit(shell_nix=SHELL_NIX, run_sh="echo benign")
    assert benign["status"] == "done", benign
    assert stage_stdout(benign) == "benign\n"


def test_a_builder_sees_no_host_process(served: Served) -> None:
    found = _run(served, 'echo "attack: pids $(ls /proc | grep -c "^[0-9]")"; '
                         'echo "attack: init $(cat /proc/1/cmdline | tr "\\0" " ")"')
    # Its own PID namespace: the builder's shell and what it started, no more.
    pids = int(found.split("attack: pids ")[1].split()[0])
    assert pids <= 5, found
    assert "nixjail" not in found and "nix-daemon" not in found, found
    _serving_benign(served)


def test_a_builder_reads_neither_the_settings_nor_other_jobs(served: Served) -> None:
    settings = served.api.settings_file
    spool = served.base / "state"
    waiting = served.create(shell_nix=SHELL_NIX, run_sh="echo other job")
    found = _run(served, f"""
cat {settings} >/dev/null 2>&1 && echo "attack: settings read" || echo "attack: no settings"
ls {spool} >/dev/null 2>&1 && echo "attack: spool listed" || echo "attack: no spool"
ls {served.run_dir}/builds >/dev/null 2>&1 && echo "attack: jobs listed" || echo "attack: no jobs"
find / -name shell.nix 2>/dev/null | sed 's/^/attack: found /'
ls /etc | sed 's/^/attack: etc /'
""")
    for nothing in ("no settings", "no spool", "no jobs"):
        assert f"attack: {nothing}" in found, found
    assert "attack: found" not in found, found
    # The sandbox's own /etc only (passwd, group, hosts).
    assert {line.split()[-1] for line in found.splitlines() if " etc " in line} <= {
        "passwd", "group", "hosts"}, found
    assert served.api.wait(waiting, 60)["status"] == "done"


def test_a_builder_cannot_reach_the_api_on_loopback(served: Served) -> None:
    port = served.api.url.rsplit(":", 1)[1]
    found = _run(served, f"""
if (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null; then echo "attack: connected"
else echo "attack: refused"; fi
""")
    # (Nix repeats a failed build's last lines: each line may come twice.)
    assert set(found.splitlines()) == {"attack: refused"}, found
    _serving_benign(served)


def _host_files_named(mark: str) -> list[str]:
    found = []
    for directory in ("/tmp", "/var/tmp", "/dev/shm", "/nix/store"):
        for root, dirs, files in os.walk(directory):
            if root.startswith("/nix/store/") and root.count("/") > 4:
                dirs[:] = []  # the store's top level and its chroots' /tmp
            found += [str(Path(root) / name) for name in files + dirs if name.startswith(mark)]
    return found


@pytest.mark.parametrize("ending", ["fails", "times out"])
def test_what_a_builder_writes_leaves_with_the_job(served: Served, ending: str) -> None:
    # 20 MiB each where a builder may write, then it fails or is killed at the
    # job's wall time with the files in place.
    writes = "\n".join(
        f'dd if=/dev/zero of={place}/{MARK}-{index} bs=1M count=20 2>/dev/null && '
        f'echo "attack: wrote {place}" || echo "attack: cannot write {place}"'
        for index, place in enumerate(["/tmp", "/var/tmp", "/dev/shm", "$TMPDIR", "$PWD"]))
    script = writes + ("\nsleep 300" if ending == "times out" else "")
    limits = {"dependencies": {"wall_time_s": 8}} if ending == "times out" else {}
    ended = served.api.submit(shell_nix=_attack(script), run_sh="true", limits=limits)
    deps = ended["stages"]["dependencies"]
    assert ended["status"] == "failed", ended
    assert deps["status"] == ("time_limit" if ending == "times out" else "nonzero_exit"), deps
    assert "attack: wrote /tmp" in deps["stderr"], deps["stderr"][-2000:]
    # /var/tmp does not exist in the sandbox; the others are the build's own.
    assert "attack: cannot write /var/tmp" in deps["stderr"]
    assert _host_files_named(MARK) == []
    assert not [path for path in Path("/nix/store").glob("*-builder-sandbox.drv.chroot")]
    _serving_benign(served)
