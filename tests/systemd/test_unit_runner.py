"""nixjail-runner.socket + nixjail-runner.service under a real systemd: a kick
starts the runner, which idles out and is started again by the next kick; the
API's kick after an enqueue is one.

No dockerd runs in this machine: a stand-in answers the Docker API with no
containers (tests/systemd/docker_stub.py), enough for the runner to start,
clean up after nothing and idle. A submission it leases fails at the
container, which shows that the runner took it. The containers themselves are
the e2e tests' part.
"""

from __future__ import annotations

import json

import pytest
from systemd_machine import SystemdMachine

pytestmark = [pytest.mark.docker]

SETTINGS = """\
[api]
listen = "127.0.0.1:8460"

[runner]
idle_exit_s = 1
"""

KICK = """
import socket
with socket.socket(socket.AF_UNIX) as kick:
    kick.connect("/run/nixjail/runner.sock")
"""

SUBMIT = """
import json, urllib.request
request = urllib.request.Request(
    "http://127.0.0.1:8460/v1/submissions", method="POST",
    data=json.dumps({"shell_nix": "{ pkgs ? import <nixpkgs> {} }: pkgs.mkShell {}",
                     "run_sh": "echo hello"}).encode(),
    headers={"Content-Type": "application/json"})
with urllib.request.urlopen(request, timeout=10) as answer:
    print(json.dumps({"status": answer.status, "body": json.load(answer)}))
"""

GET = """
import json, sys, urllib.request
with urllib.request.urlopen("http://127.0.0.1:8460/v1/submissions/" + sys.argv[1],
                            timeout=10) as answer:
    print(answer.read().decode())
"""


@pytest.fixture(scope="module")
def machine(boot) -> SystemdMachine:
    machine = boot(SETTINGS)
    machine.systemctl("start", "nixjail-test-docker.service", "nixjail-runner.socket",
                      "nixjail-api.socket")
    return machine


def kick(machine: SystemdMachine) -> None:
    machine.exec("setpriv", "--reuid=nixjail", "--regid=nixjail", "--init-groups",
                 "python3", "-c", KICK)


def test_socket_belongs_to_nixjail_alone(machine: SystemdMachine) -> None:
    assert machine.exec("stat", "-c", "%U %G %a",
                        "/run/nixjail/runner.sock").stdout.split() == ["nixjail", "nixjail", "660"]
    refused = machine.exec("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                           "python3", "-c", KICK, check=False)
    assert refused.returncode != 0 and "PermissionError" in refused.stderr


def test_a_kick_starts_the_runner_which_exits_when_idle(machine: SystemdMachine) -> None:
    machine.wait_for_state("nixjail-runner.service", ["inactive"])
    kick(machine)
    first = machine.wait_for_state("nixjail-runner.service", ["active"])
    shown = machine.show("nixjail-runner.service", "TriggeredBy", "Type", "User",
                         "SupplementaryGroups")
    assert shown == {"TriggeredBy": "nixjail-runner.socket", "Type": "notify",
                     "User": "nixjail", "SupplementaryGroups": "docker"}

    # idle_exit_s = 1: it leaves by itself, successfully, and the socket stays.
    ended = machine.wait_for_state("nixjail-runner.service", ["inactive", "failed"])
    assert (ended["ActiveState"], ended["Result"], ended["ExecMainStatus"]) == (
        "inactive", "success", "0")
    assert machine.show("nixjail-runner.socket", "SubState")["SubState"] == "listening"
    assert "idle for 1 s, exiting" in machine.journal("nixjail-runner.service")

    kick(machine)
    second = machine.wait_for_state("nixjail-runner.service", ["active"])
    assert second["InvocationID"] != first["InvocationID"]


def test_a_submission_kicks_the_runner_which_leases_it(machine: SystemdMachine) -> None:
    machine.wait_for_state("nixjail-runner.service", ["inactive"])
    created = json.loads(machine.exec("python3", "-c", SUBMIT).stdout)
    assert created["status"] == 202
    submission_id = created["body"]["id"]

    def taken() -> dict | None:
        submission = json.loads(machine.exec("python3", "-c", GET, submission_id).stdout)
        if submission["status"] not in ("queued", "running"):
            return submission
        # A runner that counts a docker failure as its host's, not the
        # submission's, gives the job back instead.
        gave_back = f"giving {submission_id} back: docker failed"
        return submission if gave_back in machine.journal("nixjail-runner.service") else None

    submission = machine.wait(taken, timeout=20, what="the runner to take the submission")
    # The runner was not running: the API's kick started it.
    assert machine.show("nixjail-runner.service", "NRestarts")["NRestarts"] == "0"
    assert f"run job of {submission_id}" in machine.journal("nixjail-runner.service")
    # The stand-in runs no container: the runner reports that as nixjail's
    # failure (or as its host's, and gives the job back).
    if submission["status"] in ("queued", "running"):
        assert submission["error"] is None
    else:
        assert submission["attempts"] == 1
        assert submission["status"] == "error" and "docker" in submission["error"]
