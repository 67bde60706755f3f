"""nixjail-cache-builder.service and nixjail-gc.service under a real systemd,
with the hardening their templates deploy (the NixOS module adds only
credentials and PATH; tests/nixos checks that).

The cache builder builds through a nix-daemon of each job with the Nix
sandbox on; the job's cgroup is below the unit's (Delegate=yes), so stopping
the unit stops its builds; and restarting any unit leaves the spool and the
runtime directory owned by nixjail (tmpfiles makes them; the root cache
builder declares neither). The gc unit collects through the host's
nix-daemon as nixjail.
"""

from __future__ import annotations

import json
import uuid

import pytest
from systemd_machine import NIXPKGS, NSJAIL, SystemdMachine
from unit_files import REQUIRED_TOOLS

pytestmark = [pytest.mark.docker]

BUILDER = "nixjail-cache-builder.service"
SETTINGS = f"""\
[cache_builder]
enabled = true
nixpkgs = "{NIXPKGS}"
"""
NIX_CONF = """\
build-users-group = nixbld
sandbox = true
substituters =
experimental-features = nix-command
"""

SUBMIT = """
import sys
from nixjail.models import SubmissionRequest
from nixjail.settings import load_settings
from nixjail.spool import Spool

spool = Spool.from_settings(load_settings())
print(spool.create(SubmissionRequest(shell_nix=sys.stdin.read(), run_sh="true")).id)
"""

STATUS = """
import json, sys
from nixjail.settings import load_settings
from nixjail.spool import Spool

submission = Spool.from_settings(load_settings()).get(sys.argv[1])
print(json.dumps(submission.model_dump(mode="json")))
"""

# The processes whose command line has `marker`, with their memory cgroup.
PROCESSES = """
import json, os, sys
found = {}
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        cmdline = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\\0", b" ").decode()
        cgroups = open(f"/proc/{pid}/cgroup").read().splitlines()
    except OSError:
        continue
    if sys.argv[1] in cmdline and "python3" not in cmdline:
        memory = [line.split(":", 2)[2] for line in cgroups
                  if "memory" in line.split(":")[1].split(",")]
        unified = [line.split(":", 2)[2] for line in cgroups if line.split(":")[1] == ""]
        found[pid] = (memory or unified)[0]
print(json.dumps(found))
"""


def shell_nix(build: str, name: str) -> str:
    return ("{ pkgs ? import <nixpkgs> {} }:\n"
            f"let env = pkgs.runCommand \"{name}\" {{}} ''{build}''; in\n"
            "pkgs.mkShell { packages = [ env ]; }\n")


@pytest.fixture(scope="module")
def machine(boot) -> SystemdMachine:
    machine = boot(SETTINGS)
    machine.write("/etc/nix/nix.conf", NIX_CONF)
    # On PATH as on NixOS (the module puts pkgs.nsjail on the unit's PATH).
    machine.exec("ln", "-sfn", NSJAIL, "/usr/local/bin/nsjail")
    machine.systemctl("start", "nixjail-test-nix-daemon.service", BUILDER)
    machine.wait_for_state(BUILDER, ["active"], timeout=30)
    return machine


AS_NIXJAIL = ("setpriv", "--reuid=nixjail", "--regid=nixjail", "--init-groups")


def submit(machine: SystemdMachine, text: str) -> str:
    # As the API would: the nixjail user writes the spool.
    return machine.exec(*AS_NIXJAIL, "env", "PYTHONPATH=/opt/nixjail/src:/opt/nixjail/site",
                        "NIXJAIL_SETTINGS=/etc/nixjail/settings.toml", "python3", "-c", SUBMIT,
                        input=text).stdout.strip()


def submission(machine: SystemdMachine, submission_id: str) -> dict:
    return json.loads(machine.exec(*AS_NIXJAIL, "env",
                                   "PYTHONPATH=/opt/nixjail/src:/opt/nixjail/site",
                                   "NIXJAIL_SETTINGS=/etc/nixjail/settings.toml", "python3",
                                   "-c", STATUS, submission_id).stdout)


def processes(machine: SystemdMachine, marker: str) -> dict[str, str]:
    return json.loads(machine.exec("python3", "-c", PROCESSES, marker).stdout)


def owners(machine: SystemdMachine) -> list[str]:
    return machine.exec("stat", "-c", "%n %U:%G %a", "/var/lib/nixjail",
                        "/run/nixjail").stdout.splitlines()


SPOOL_OWNERS = ["/var/lib/nixjail nixjail:nixjail 750", "/run/nixjail nixjail:nixjail 711"]


def test_the_unit_runs_with_its_hardening(machine: SystemdMachine) -> None:
    shown = machine.show(BUILDER, "Type", "User", "Group", "UMask", "Delegate",
                         "ProtectSystem", "ProtectHostname", "NoNewPrivileges",
                         "LockPersonality", "RestrictSUIDSGID", "StateDirectory",
                         "RuntimeDirectory")
    assert shown == {"Type": "notify", "User": "root", "Group": "nixjail", "UMask": "0007",
                     "Delegate": "yes", "ProtectSystem": "full", "ProtectHostname": "no",
                     "NoNewPrivileges": "yes", "LockPersonality": "no",
                     "RestrictSUIDSGID": "no", "StateDirectory": "", "RuntimeDirectory": ""}
    # Its tools on the PATH a unit gets here, as the module's PATH has them on NixOS.
    found = machine.exec("systemd-run", "--wait", "--pipe", "--quiet", "sh", "-c",
                         "for tool in \"$@\"; do command -v \"$tool\" >/dev/null && "
                         "echo \"$tool\"; done", "sh", *sorted(REQUIRED_TOOLS[BUILDER]))
    assert set(found.stdout.split()) == REQUIRED_TOOLS[BUILDER]


def test_a_build_through_the_jobs_daemon_in_the_nix_sandbox(machine: SystemdMachine) -> None:
    # The Nix sandbox names its host localhost: a build that sees another
    # host name ran without it (and one whose sethostname failed never ran).
    name = f"sandboxed-{uuid.uuid4().hex[:8]}"
    submission_id = submit(machine, shell_nix(
        'test "$(hostname)" = localhost; test ! -e /etc/nixjail/settings.toml; echo ok > $out',
        name))

    def built() -> dict | None:
        current = submission(machine, submission_id)
        return current if current["stages"]["dependencies"] else None

    done = machine.wait(built, timeout=60, what="the dependencies stage", interval=0.3)
    deps = done["stages"]["dependencies"]
    assert deps["status"] == "ok", (deps, machine.journal(BUILDER))
    assert deps["cached"] is False
    assert f"-{name}.drv" in deps["stderr"]
    assert done["status"] == "queued"  # handed on to the workers
    assert owners(machine) == SPOOL_OWNERS


def test_builds_run_in_the_units_cgroup_and_stop_with_it(machine: SystemdMachine) -> None:
    marker = f"nixjail-slow-{uuid.uuid4().hex[:8]}"
    submission_id = submit(machine, shell_nix(f"sleep 300 # {marker}\ntouch $out", marker))
    running = machine.wait(lambda: processes(machine, "sleep 300"), timeout=60,
                           what="the slow build to start", interval=0.3)
    unit_cgroup = machine.show(BUILDER, "ControlGroup")["ControlGroup"]
    for pid, cgroup in running.items():
        assert cgroup.startswith(unit_cgroup + "/"), (pid, cgroup, unit_cgroup)
        assert cgroup != unit_cgroup + "/supervisor"

    machine.systemctl("stop", BUILDER)
    assert machine.show(BUILDER, "ActiveState")["ActiveState"] == "inactive"
    assert processes(machine, "sleep 300") == {}
    machine.systemctl("start", BUILDER)
    machine.wait_for_state(BUILDER, ["active"], timeout=30)
    # Its lease went back; the restarted builder leases it again.
    again = machine.wait(lambda: processes(machine, "sleep 300"), timeout=60,
                         what="the build to start again", interval=0.3)
    assert again and set(again).isdisjoint(running)
    assert submission(machine, submission_id)["status"] in ("queued", "building")
    machine.systemctl("restart", BUILDER)
    machine.wait(lambda: processes(machine, "sleep 300") != again, timeout=30,
                 what="the old build to stop")


def test_the_spool_keeps_its_owner_across_restarts_of_every_unit(
        machine: SystemdMachine) -> None:
    machine.systemctl("start", "nixjail-test-docker.service", "nixjail-api.socket")
    for unit in ("nixjail-api.service", BUILDER, "nixjail-expire-leases.service",
                 "nixjail-gc.service", BUILDER, "nixjail-runner.service"):
        verb = "start" if unit.startswith(("nixjail-expire", "nixjail-gc")) else "restart"
        done = machine.systemctl(verb, unit, check=False)
        assert done.returncode == 0, machine.journal(unit)
        assert owners(machine) == SPOOL_OWNERS, unit
    machine.systemctl("stop", "nixjail-runner.service", "nixjail-api.service")


def test_gc_collects_through_the_daemon_with_its_hardening(machine: SystemdMachine) -> None:
    # An environment root of a week and a day ago: gc removes it, then collects.
    root = "/var/lib/nixjail/gcroots/environments/old-root"
    name = f"/tmp/nixjail-gc-test-{uuid.uuid4().hex[:8]}"
    machine.write(name, name)
    target = machine.exec("nix-store", "--add", name).stdout.strip()
    machine.exec(*AS_NIXJAIL, "env", "HOME=/var/empty", "sh", "-c",
                 f"mkdir -p {root.rsplit('/', 1)[0]} && "
                 f"nix-store --add-root {root} --indirect --realise {target} >/dev/null && "
                 f"touch -h -d '8 days ago' {root}")
    machine.systemctl("start", "nixjail-gc.service")
    shown = machine.show("nixjail-gc.service", "Result", "User", "PrivateNetwork",
                         "ProtectSystem")
    assert shown == {"Result": "success", "User": "nixjail", "PrivateNetwork": "yes",
                     "ProtectSystem": "strict"}, machine.journal("nixjail-gc.service")
    journal = machine.journal("nixjail-gc.service")
    assert f"removed the root {root}" in journal
    assert "deleted" in journal and "store paths" in journal
    assert machine.exec("nix-store", "--check-validity", target, check=False).returncode != 0
