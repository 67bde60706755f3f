"""nixjail-api.socket + nixjail-api.service under a real systemd: socket
activation, Type=notify, the watchdog, restarts that keep the leases.

What vm-tests/all-in-one.nix checks of the API on NixOS, from the same unit
templates (nixos/units/).
"""

from __future__ import annotations

import json
import time

import pytest
from systemd_machine import SystemdMachine

pytestmark = [pytest.mark.docker]

SETTINGS = """\
[api]
listen = "127.0.0.1:8460"
"""

GET = """
import json, sys, urllib.request
with urllib.request.urlopen("http://127.0.0.1:8460" + sys.argv[1], timeout=10) as answer:
    print(json.dumps({"status": answer.status, "body": json.load(answer)}))
"""


@pytest.fixture(scope="module")
def machine(boot) -> SystemdMachine:
    machine = boot(SETTINGS)
    machine.systemctl("start", "nixjail-api.socket")
    return machine


def get(machine: SystemdMachine, path: str) -> dict:
    out = machine.exec("python3", "-c", GET, path).stdout
    return json.loads(out)


def test_the_first_request_starts_the_api(machine: SystemdMachine) -> None:
    assert machine.show("nixjail-api.socket", "ActiveState", "SubState") == {
        "ActiveState": "active", "SubState": "listening"}
    assert machine.show("nixjail-api.service", "ActiveState")["ActiveState"] == "inactive"

    assert get(machine, "/healthz") == {"status": 200, "body": {"status": "ok", "parts": {}}}

    shown = machine.show("nixjail-api.service", "Type", "ActiveState", "SubState",
                         "NRestarts", "StatusText", "TriggeredBy", "User")
    assert shown["Type"] == "notify"
    assert (shown["ActiveState"], shown["SubState"]) == ("active", "running")
    assert shown["NRestarts"] == "0"
    assert shown["TriggeredBy"] == "nixjail-api.socket"
    assert shown["User"] == "nixjail"
    # STATUS= from sd_notify: the socket it was given, not one it bound itself.
    assert shown["StatusText"] == "listening on 127.0.0.1:8460"


def test_a_stopped_api_starts_again_on_the_next_request(machine: SystemdMachine) -> None:
    get(machine, "/healthz")
    machine.systemctl("stop", "nixjail-api.service")
    stopped = machine.show("nixjail-api.service", "ActiveState", "Result")
    assert stopped == {"ActiveState": "inactive", "Result": "success"}  # SIGTERM: a clean exit
    assert get(machine, "/healthz")["status"] == 200
    assert machine.show("nixjail-api.service", "ActiveState")["ActiveState"] == "active"


def test_leases_survive_a_restart_of_the_api(machine: SystemdMachine) -> None:
    get(machine, "/healthz")
    machine.exec("setpriv", "--reuid=nixjail", "--regid=nixjail", "--init-groups",
                 "touch", "/run/nixjail/lease-probe")
    machine.systemctl("restart", "nixjail-api.service")
    machine.wait_for_state("nixjail-api.service", ["active"])
    machine.exec("test", "-e", "/run/nixjail/lease-probe")
    assert machine.exec("stat", "-c", "%U %a", "/run/nixjail").stdout.split() == [
        "nixjail", "711"]


def test_watchdog_pings_keep_it_running(machine: SystemdMachine) -> None:
    machine.drop_in("nixjail-api.service", "[Service]\nWatchdogSec=1s\n")
    try:
        machine.systemctl("restart", "nixjail-api.service")
        before = machine.wait_for_state("nixjail-api.service", ["active"])
        assert machine.show("nixjail-api.service", "WatchdogUSec")["WatchdogUSec"] == "1s"
        time.sleep(3)  # three watchdog periods
        after = machine.show("nixjail-api.service", "ActiveState", "MainPID", "NRestarts")
        assert after == {"ActiveState": "active", "MainPID": before["MainPID"],
                         "NRestarts": before["NRestarts"]}
        assert get(machine, "/healthz")["status"] == 200
    finally:
        machine.exec("rm", "-rf", "/run/systemd/system/nixjail-api.service.d")
        machine.systemctl("daemon-reload")


def test_a_hung_api_is_restarted_by_its_watchdog(machine: SystemdMachine) -> None:
    machine.drop_in("nixjail-api.service", "[Service]\nWatchdogSec=1s\n")
    try:
        machine.systemctl("restart", "nixjail-api.service")
        before = machine.wait_for_state("nixjail-api.service", ["active"])
        # A stopped process sends no pings: systemd must notice and restart it.
        machine.systemctl("kill", "--signal=SIGSTOP", "nixjail-api.service")

        def restarted() -> dict[str, str] | None:
            shown = machine.show("nixjail-api.service", "NRestarts", "MainPID", "ActiveState")
            changed = int(shown["NRestarts"]) > int(before["NRestarts"])
            return shown if changed and shown["ActiveState"] == "active" else None

        machine.wait(restarted, timeout=15, what="a watchdog restart")
        assert "Watchdog timeout" in machine.journal("nixjail-api.service")
        assert get(machine, "/healthz")["status"] == 200
    finally:
        machine.exec("rm", "-rf", "/run/systemd/system/nixjail-api.service.d")
        machine.systemctl("daemon-reload")


def test_every_unit_passes_systemd_analyze_verify(machine: SystemdMachine) -> None:
    units = [f"/usr/local/lib/systemd/system/{name}" for name in machine.units
             if name.endswith((".service", ".socket", ".timer"))]
    done = machine.exec("systemd-analyze", "verify", *units, check=False)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")
