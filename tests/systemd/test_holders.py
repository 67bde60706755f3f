"""nixjail.holders: is a lease's holder still running? Against a real systemd
(in a container, over its D-Bus system bus) and real processes."""

from __future__ import annotations

import os
import subprocess

import pytest
from systemd_machine import HOSTNAME, SystemdMachine

from nixjail import holders
from nixjail.holders import Holder, Systemd, holder_alive, parse_holder

INVOCATION = "0123456789abcdef0123456789abcdef"


def test_parse_holder() -> None:
    assert parse_holder("host/1234") == Holder("host", 1234)
    assert parse_holder(f"host/1234/{INVOCATION}") == Holder("host", 1234, INVOCATION)
    for unknown in ("host", "host/", "host/0", "host/12x", "/12", "host/1/xyz",
                    f"host/1/{INVOCATION.upper()}", "test-worker", "a/b/1"):
        assert parse_holder(unknown) is None, unknown


def test_holder_of_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    assert holders.holder("worker-1") == f"worker-1/{os.getpid()}"
    monkeypatch.setenv("INVOCATION_ID", INVOCATION)
    assert holders.holder("worker-1") == f"worker-1/{os.getpid()}/{INVOCATION}"
    assert parse_holder(holders.holder("worker-1")) == Holder("worker-1", os.getpid(), INVOCATION)
    monkeypatch.setenv("INVOCATION_ID", "not an id")
    assert holders.holder("worker-1") == f"worker-1/{os.getpid()}"


def test_local_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NIXJAIL_RUNNER_NAME", "runner-a")
    monkeypatch.delenv("NIXJAIL_CACHE_BUILDER_NAME", raising=False)
    host = os.uname().nodename
    assert holders.local_names() == {host, "runner-a", f"cache-builder@{host}"}
    monkeypatch.setenv("NIXJAIL_CACHE_BUILDER_NAME", "builder-b")
    assert holders.local_names() == {host, "runner-a", "builder-b"}


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()  # reaped: its PID names nobody now
    return child.pid


def test_processes_without_systemd() -> None:
    names = {"here"}
    assert holder_alive(f"here/{os.getpid()}", names=names) is True
    assert holder_alive("here/1", names=names) is True  # not ours to signal, but there
    assert holder_alive(f"here/{dead_pid()}", names=names) is False
    # An invocation id with no systemd to ask: the PID decides.
    assert holder_alive(f"here/{dead_pid()}/{INVOCATION}", names=names) is False


def test_what_this_host_cannot_tell_counts_as_alive() -> None:
    names = {"here"}
    assert holder_alive(f"elsewhere/{dead_pid()}", names=names) is True
    assert holder_alive("test-worker", names=names) is True
    assert holder_alive("", names=names) is True


def test_no_systemd_to_ask(tmp_path) -> None:
    assert Systemd.connect(f"unix:path={tmp_path}/no-bus") is None
    assert holders.systemd_holder_alive(f"unix:path={tmp_path}/no-bus") is None


@pytest.fixture(scope="module")
def machine(boot) -> SystemdMachine:
    return boot("")


@pytest.fixture
def systemd(machine: SystemdMachine):
    connected = Systemd.connect(machine.bus_address)
    assert connected is not None
    yield connected
    connected.close()


def start_unit(machine: SystemdMachine, unit: str) -> dict[str, str]:
    machine.exec("systemd-run", f"--unit={unit}", "--property=RemainAfterExit=no",
                 "sleep", "infinity")
    return machine.show(f"{unit}.service", "MainPID", "InvocationID")


@pytest.mark.docker
def test_a_unit_invocation_runs_until_its_unit_stops(machine: SystemdMachine,
                                                      systemd: Systemd) -> None:
    unit = start_unit(machine, "holder-stops")
    holder = f"{HOSTNAME}/{unit['MainPID']}/{unit['InvocationID']}"
    assert holder_alive(holder, systemd=systemd, names={HOSTNAME}) is True
    machine.systemctl("stop", "holder-stops.service")
    assert holder_alive(holder, systemd=systemd, names={HOSTNAME}) is False


@pytest.mark.docker
def test_a_restarted_unit_is_a_new_invocation(machine: SystemdMachine,
                                              systemd: Systemd) -> None:
    machine.write("/run/systemd/system/holder-restarts.service",
                  "[Service]\nExecStart=/bin/sleep infinity\n")
    machine.systemctl("daemon-reload")
    machine.systemctl("start", "holder-restarts.service")
    before = machine.show("holder-restarts.service", "MainPID", "InvocationID")
    machine.systemctl("restart", "holder-restarts.service")
    after = machine.show("holder-restarts.service", "MainPID", "InvocationID")
    assert holder_alive(f"{HOSTNAME}/{before['MainPID']}/{before['InvocationID']}",
                        systemd=systemd, names={HOSTNAME}) is False
    assert holder_alive(f"{HOSTNAME}/{after['MainPID']}/{after['InvocationID']}",
                        systemd=systemd, names={HOSTNAME}) is True


@pytest.mark.docker
def test_a_failed_unit_keeps_its_invocation_but_runs_no_more(machine: SystemdMachine,
                                                             systemd: Systemd) -> None:
    machine.write("/run/systemd/system/holder-fails.service",
                  "[Service]\nExecStart=/bin/sleep infinity\n")
    machine.systemctl("daemon-reload")
    machine.systemctl("start", "holder-fails.service")
    unit = machine.show("holder-fails.service", "MainPID", "InvocationID")
    holder = f"{HOSTNAME}/{unit['MainPID']}/{unit['InvocationID']}"
    assert holder_alive(holder, systemd=systemd, names={HOSTNAME}) is True
    machine.systemctl("kill", "--signal=SIGKILL", "holder-fails.service")
    machine.wait_for_state("holder-fails.service", ["failed"])
    # systemd still knows the invocation: the unit's state decides.
    assert systemd.manager.GetUnitByInvocationID(bytes.fromhex(unit["InvocationID"]))
    assert holder_alive(holder, systemd=systemd, names={HOSTNAME}) is False


@pytest.mark.docker
def test_unknown_invocations_and_other_hosts(machine: SystemdMachine, systemd: Systemd) -> None:
    assert holder_alive(f"{HOSTNAME}/1/{INVOCATION}", systemd=systemd,
                        names={HOSTNAME}) is False
    # Another host's invocation is not this systemd's to know.
    assert holder_alive(f"elsewhere/1/{INVOCATION}", systemd=systemd,
                        names={HOSTNAME}) is True


@pytest.mark.docker
def test_systemd_holder_alive_asks_the_bus(machine: SystemdMachine,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NIXJAIL_RUNNER_NAME", HOSTNAME)
    alive = holders.systemd_holder_alive(machine.bus_address)
    assert alive is not None
    unit = start_unit(machine, "holder-asked")
    holder = f"{HOSTNAME}/{unit['MainPID']}/{unit['InvocationID']}"
    assert alive(holder) is True
    machine.systemctl("stop", "holder-asked.service")
    assert alive(holder) is False
