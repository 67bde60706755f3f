"""nixjail-expire-leases.timer + .service under a real systemd: the timer
fires every 30 s (here shortened to 2 s by a drop-in, so that the tests wait
less), and each oneshot pass ends or requeues leases whose deadline passed or
whose holder is gone, the unit invocation asked about over D-Bus.

What vm-tests/all-in-one.nix checks of lease expiry on NixOS, from the same
unit templates (nixos/units/). `max_attempts = 1` makes each expiry end its
submission with the reason, which tells the two kinds apart.
"""

from __future__ import annotations

import pytest
from systemd_machine import HOSTNAME, SystemdMachine

pytestmark = [pytest.mark.docker]

SERVICE = "nixjail-expire-leases.service"
SETTINGS = """\
max_attempts = 1
lease_s = 3600
"""

# Creates a submission and leases it for `holder`, for `lease_s` seconds.
LEASE = """
import sys
from nixjail.models import SubmissionRequest
from nixjail.settings import load_settings
from nixjail.spool import Queue, Spool

spool = Spool.from_settings(load_settings())
spool.lease_s = float(sys.argv[2])
submission = spool.create(SubmissionRequest(shell_nix="{}: {}", run_sh="true"))
lease = spool.lease(Queue.run, sys.argv[1])
assert lease is not None and lease.submission_id == submission.id
print(submission.id)
"""

STATUS = """
import json, sys
from nixjail.settings import load_settings
from nixjail.spool import Spool

submission = Spool.from_settings(load_settings()).get(sys.argv[1])
print(json.dumps({"status": str(submission.status), "error": submission.error}))
"""


@pytest.fixture(scope="module")
def machine(boot) -> SystemdMachine:
    machine = boot(SETTINGS)
    # A first pass by hand makes the state and runtime directories, owned by nixjail.
    machine.systemctl("start", SERVICE)
    timers = machine.systemctl("show", "nixjail-expire-leases.timer",
                               "--property=TimersMonotonic").stdout
    assert "OnUnitActiveUSec=30s" in timers  # as shipped
    # An empty value resets every trigger: the first one comes after 1 s.
    machine.drop_in("nixjail-expire-leases.timer", "[Timer]\nOnUnitActiveSec=\n"
                    "OnActiveSec=1s\nOnUnitActiveSec=2s\n")
    machine.systemctl("start", "nixjail-expire-leases.timer")
    return machine


def lease(machine: SystemdMachine, holder: str, lease_s: float) -> str:
    return machine.exec("setpriv", "--reuid=nixjail", "--regid=nixjail", "--init-groups",
                        "env", "PYTHONPATH=/opt/nixjail/src:/opt/nixjail/site",
                        "NIXJAIL_SETTINGS=/etc/nixjail/settings.toml",
                        "python3", "-c", LEASE, holder, str(lease_s)).stdout.strip()


def status(machine: SystemdMachine, submission_id: str) -> dict:
    return machine.python_json(STATUS.replace("sys.argv[1]", repr(submission_id)))


def next_pass(machine: SystemdMachine) -> None:
    """Wait until a pass that starts after this call has finished.

    Passes follow each other closely on a loaded machine (seconds each, the
    timer 2 s after the last), so the unit may be seen only while active: a
    pass counts once its start was seen and a later exit is recorded, or a
    later start (a oneshot starts again only after it exited; systemd clears
    the exit time at each start, so a poll that lands in every next pass
    would never see one), whatever the state at that moment.
    """
    before = int(machine.show(SERVICE, "ExecMainStartTimestampMonotonic")[
        "ExecMainStartTimestampMonotonic"])
    first_new_start: list[int] = []

    def done() -> bool:
        shown = machine.show(SERVICE, "ExecMainStartTimestampMonotonic",
                             "ExecMainExitTimestampMonotonic", "Result")
        assert shown["Result"] == "success", machine.journal(SERVICE)
        started = int(shown["ExecMainStartTimestampMonotonic"])
        if started != before and not first_new_start:
            first_new_start.append(started)
        return bool(first_new_start) and (
            started > first_new_start[0]
            or int(shown["ExecMainExitTimestampMonotonic"]) >= first_new_start[0])

    machine.wait(done, timeout=45, what="the next expiry pass", interval=0.2)


def test_the_timer_fires_every_few_seconds(machine: SystemdMachine) -> None:
    timer = machine.show("nixjail-expire-leases.timer", "ActiveState", "AccuracyUSec")
    assert timer == {"ActiveState": "active", "AccuracyUSec": "1s"}
    timers = machine.systemctl("show", "nixjail-expire-leases.timer",
                               "--property=TimersMonotonic").stdout
    assert "OnUnitActiveUSec=2s" in timers
    first = machine.show("nixjail-expire-leases.timer", "LastTriggerUSecMonotonic")
    next_pass(machine)
    assert machine.show("nixjail-expire-leases.timer", "LastTriggerUSecMonotonic") != first


def test_a_lease_past_its_deadline_is_expired(machine: SystemdMachine) -> None:
    # A holder on another host: only its deadline can expire it.
    # Long enough to see it held first, even on a machine busy with other tests.
    submission_id = lease(machine, "another-host/1", lease_s=4)
    assert status(machine, submission_id)["status"] == "running"
    machine.wait(lambda: status(machine, submission_id)["status"] == "error", timeout=20,
                 what="the expiry of the lease", interval=0.3)
    assert status(machine, submission_id)["error"] == (
        "gave up after 1 attempts: the lease held by another-host/1 expired")
    assert f"ended {submission_id} as error" in machine.journal(SERVICE)


def test_a_lease_whose_holder_is_gone_is_expired_before_its_deadline(
        machine: SystemdMachine) -> None:
    # A unit invocation on this machine, and a plain process: both hold leases
    # for an hour, and both are alive at first.
    machine.exec("systemd-run", "--unit=nixjail-test-holder", "sleep", "infinity")
    unit = machine.show("nixjail-test-holder.service", "MainPID", "InvocationID")
    by_unit = f"{HOSTNAME}/{unit['MainPID']}/{unit['InvocationID']}"
    process = machine.exec("sh", "-c", "sleep infinity >/dev/null 2>&1 & echo $!").stdout.strip()
    by_pid = f"{HOSTNAME}/{process}"
    leases = {holder: lease(machine, holder, lease_s=3600) for holder in (by_unit, by_pid)}

    next_pass(machine)
    for submission_id in leases.values():
        assert status(machine, submission_id)["status"] == "running"

    machine.systemctl("stop", "nixjail-test-holder.service")
    machine.exec("sh", "-c", f"kill {process}")
    next_pass(machine)
    for holder, submission_id in leases.items():
        assert status(machine, submission_id) == {
            "status": "error",
            "error": f"gave up after 1 attempts: the lease holder {holder} is gone"}
