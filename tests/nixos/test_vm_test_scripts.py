"""The test scripts of vm-tests/*.nix pass the NixOS test driver's type check.

The driver (nixpkgs: nixos/lib/testing/driver.nix) prepends its declarations
(retry, subtest, one Machine per node) to the rendered testScript and runs
mypy on it; a script that fails that never boots a VM. Here the script is
rendered with stand-ins (vm-test-script.nix), prepended with stubs of the
driver's API that carry its real signatures (driver_stubs/), and checked with
the driver's mypy options, and with --check-untyped-defs besides, so that a
call inside an unannotated function (which the driver's check skips, and
which fails only when the VM test runs) is checked too.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from nixos_eval import NIX_OPTIONS, REPO

HERE = Path(__file__).resolve().parent
STUBS = HERE / "driver_stubs"
VM_TESTS = sorted((REPO / "vm-tests").glob("*.nix"))
MYPY = [sys.executable, "-m", "mypy", "--no-implicit-optional", "--pretty",
        "--no-color-output", "--no-incremental", "--check-untyped-defs"]


def render(evaluate, path: Path) -> dict:
    done = subprocess.run(
        ["nix-instantiate", "--eval", "--strict", "--json", *NIX_OPTIONS,
         str(HERE / "vm-test-script.nix"), "--argstr", "libDir", str(evaluate.lib),
         "--arg", "file", str(path)],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def python_name(name: str) -> str:
    """A node's name as the driver makes it a Python identifier."""
    head = name[:1] if re.match(r"[A-z_]", name[:1]) else "_"
    return head + re.sub(r"[^A-z0-9_]", "_", name[1:])


def type_check(script: str, nodes: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    hints = " ".join(f"{python_name(node)}: QemuMachine;" for node in nodes)
    checked = tmp_path / "testScriptWithTypes"
    checked.write_text((STUBS / "prepend.py.in").read_text() + hints + "\n" + script)
    return subprocess.run([*MYPY, str(checked)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MYPYPATH": str(STUBS)}, cwd=tmp_path)


@pytest.mark.parametrize("path", VM_TESTS, ids=lambda path: path.name)
def test_the_script_passes_the_drivers_type_check(evaluate, path: Path, tmp_path: Path) -> None:
    rendered = render(evaluate, path)
    assert rendered["nodes"], "a VM test without nodes"
    done = type_check(rendered["testScript"], rendered["nodes"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_check_catches_a_wrong_keyword(tmp_path: Path) -> None:
    # The mistakes vm-tests/ once had: one at the top level, one inside an
    # unannotated function (a TypeError only once the VM runs).
    script = ("def ended(_last_try):\n    return True\n"
              "retry(ended, timeout_seconds=600)\n"
              "def wait():\n    retry(ended, timeout_seconds=600)\n"
              "machine.succeed('true', timeout='x')\n")
    done = type_check(script, ["machine"], tmp_path)
    assert done.returncode == 1
    output = " ".join(done.stdout.split())
    assert output.count('Unexpected keyword argument "timeout_seconds"') == 2, output
    assert 'Argument "timeout" to "succeed" of "Machine" has incompatible type' in output
