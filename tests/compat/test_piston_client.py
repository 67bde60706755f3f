"""Piston's own JavaScript client (npm `piston-client` 1.0.2, driven by
clients/piston_run.mjs) against the whole stack: the API on waitress, the
runner, dockerd and the fixture nixpkgs, with the fixture catalog's bash as
Piston's bash 5.2.0. The client sends no token, so the front end takes
anonymous callers."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from compat_helpers import start_compat_stack
from e2e_stack import Stack

pytestmark = [pytest.mark.docker, pytest.mark.nix]

CLIENTS = Path(__file__).resolve().parent / "clients"
DRIVER = CLIENTS / "piston_run.mjs"
COMPAT = """
[compat.piston]
enabled = true
anonymous = true

[compat]
anonymous_requests_per_minute = 100
"""


def piston_client(stack: Stack, *calls: list[Any]) -> list[Any]:
    """What each call of the client returned, run in one node process."""
    node = shutil.which("node")
    if node is None or not (CLIENTS / "node_modules" / "piston-client").is_dir():
        pytest.fail("node or npm's piston-client is missing: run scripts/bootstrap node")
    done = subprocess.run([node, str(DRIVER), f"{stack.url}/piston"],
                          input=json.dumps(list(calls)), capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def piston_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    for stack in start_compat_stack(tmp_path_factory.mktemp("piston"), COMPAT):
        # Build the environment once through /v1, so the client's runs wait
        # (at most api.max_wait_s) for themselves only.
        warm = stack.submit(wait=300, shell_nix=None, environment="bash",
                            files={"main.sh": "true"})
        assert warm["status"] == "done", warm
        yield stack


def test_runtimes_and_a_file_s_stdout(piston_stack: Stack) -> None:
    runtimes, result = piston_client(
        piston_stack, ["runtimes"], ["execute", "bash", 'echo "hello from $BASH_VERSION"'])
    assert runtimes == [{"language": "bash", "version": "5.2.0", "aliases": ["sh"]}]
    assert (result["language"], result["version"]) == ("bash", "5.2.0")
    assert "compile" not in result
    run = result["run"]
    assert run["stdout"].startswith("hello from 5.") and run["stdout"].endswith("\n"), run
    assert (run["code"], run["signal"], run["status"], run["stderr"]) == (0, None, None, "")
    assert run["output"] == run["stdout"]
    assert run["wall_time"] > 0 and run["memory"] > 0


def test_stdin_and_args_reach_the_program(piston_stack: Stack) -> None:
    given, default, alias = piston_client(
        piston_stack,
        ["execute", "bash", 'read name; echo "hello $name: $1 $3"',
         {"stdin": "world", "args": ["a", "b c", "d"]}],
        # Without args, the client sends its own ["1", "2", "3"].
        ["execute", "bash", 'echo "$#: $*"'],
        # An alias: the client finds no version for it and sends none.
        ["execute", "sh", 'echo "via $0"'])
    assert given["run"]["stdout"] == "hello world: a d\n", given
    assert default["run"]["stdout"] == "3: 1 2 3\n", default
    assert alias["language"] == "bash" and alias["run"]["stdout"] == "via main.sh\n", alias


def test_a_nonzero_exit_gives_its_code(piston_stack: Stack) -> None:
    (result,) = piston_client(piston_stack, ["execute", "bash", "echo oops >&2; exit 3"])
    run = result["run"]
    assert (run["code"], run["status"], run["stderr"]) == (3, "RE", "oops\n"), run
    assert run["message"] == "Exited with error status 3"


def test_a_run_past_its_timeout_is_killed(piston_stack: Stack) -> None:
    (result,) = piston_client(piston_stack, ["execute", "bash", "while :; do :; done",
                                             {"runTimeout": 1000}])
    run = result["run"]
    assert (run["status"], run["signal"], run["code"]) == ("TO", "SIGKILL", None), run
    assert run["wall_time"] >= 1000


def test_refusals_come_back_as_pistons_messages(piston_stack: Stack) -> None:
    unknown, too_long = piston_client(
        piston_stack, ["execute", "cobol", "DISPLAY 'HI'."],
        ["execute", "bash", "true", {"runTimeout": 3_600_000}])
    assert unknown == {"message": "cobol-* runtime is unknown"}
    assert too_long == {"message": "run_timeout cannot exceed the configured limit of 60000"}
