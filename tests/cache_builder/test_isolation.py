"""What a shell.nix cannot reach: host files, the network, another job's HOME."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from cb_helpers import limits, request, salt, shell
from test_builds import one_job

from nixjail.cache_builder.build import BuilderConfig
from nixjail.cache_builder.cgroup import JobCgroup
from nixjail.cache_builder.jail import prepare_job_dir, run_jail
from nixjail.models import StageStatus
from nixjail.spool import Spool


@pytest.mark.parametrize("expression", [
    "builtins.readFile /etc/hostname",
    'builtins.readFile "/etc/hostname"',
    "builtins.readDir /nix/var/nix",
    'builtins.fetchurl "http://127.0.0.1:9/secret"',
])
def test_restricted_evaluation_refuses_host_files_and_uris(builder, spool: Spool,
                                                           expression: str):
    sub = spool.create(request(shell(body=f"SECRET = {expression};")))
    one_job(builder)
    deps = spool.get(sub.id).stages.dependencies
    assert deps.status is StageStatus.nonzero_exit, deps
    assert "is forbidden in restricted mode" in deps.stderr


def test_the_jail_user_is_not_root_and_has_no_network(builder):
    config: BuilderConfig = builder.config
    job_dir = config.work_dir / f"probe-{salt()}"
    prepare_job_dir(job_dir, "{}", config.jail)
    run = run_jail(config.jail, job_dir, limits(wall_time_s=10), cgroup=None, command=[
        "/bin/bash", "-c",
        "echo uid=$(id -u); "
        "(exec 3<>/dev/tcp/127.0.0.1/9 && echo connected) 2>/dev/null || echo no-network; "
        "ls /nix/var/nix/; cat /etc/nix/nix.conf"])
    assert run.result.status is StageStatus.ok, run.result
    out = run.result.stdout
    assert "uid=1000" in out and "no-network" in out
    # The daemon's socket only: no database, no roots, no profiles.
    assert out.split("no-network\n")[1].split("\n")[0] == "daemon-socket"
    assert "restrict-eval = true" in out


def test_two_jobs_do_not_share_home_or_tmp(builder):
    config: BuilderConfig = builder.config
    results = {}

    def job(name: str, script: str) -> None:
        job_dir = config.work_dir / f"{name}-{salt()}"
        prepare_job_dir(job_dir, "{}", config.jail)
        results[name] = run_jail(config.jail, job_dir, limits(wall_time_s=10), cgroup=None,
                                 command=["/bin/bash", "-c", script]).result

    writer = threading.Thread(target=job, args=("writer", (
        'echo "$HOME"; echo left-behind > "$HOME/secret"; mkdir -p "$HOME/.cache/nix"; '
        "echo left-behind > /tmp/secret; sleep 1.5")))
    writer.start()
    time.sleep(0.5)
    job("reader", 'echo "$HOME"; ls -A "$HOME" /tmp; cat "$HOME/secret" /tmp/secret 2>&1; true')
    writer.join()
    assert results["writer"].status is StageStatus.ok
    reader = results["reader"]
    # The same HOME path in both jails, empty in the second while the first runs.
    assert results["writer"].stdout.splitlines()[0] == reader.stdout.splitlines()[0]
    assert "left-behind" not in reader.stdout and "secret" not in reader.stdout.split(
        "cat:")[0]
    assert reader.stdout.count("No such file") == 2


def test_evaluation_sees_no_environment_and_cannot_list_home(builder, spool: Spool):
    # Restricted evaluation reads no environment variable (HOME included)...
    blind = shell(body='SEEN = if builtins.getEnv "HOME" == "" then "nothing" '
                       'else throw "the environment leaked";')
    sub = spool.create(request(blind))
    one_job(builder)
    done = spool.get(sub.id)
    assert done.stages.dependencies.status is StageStatus.ok
    assert "SEEN='nothing'" in Path(done.environment.script).read_text()
    # ...and no directory outside nixpkgs and its own, its HOME included.
    nosy = spool.create(request(shell(body="LISTED = builtins.readDir /home/nixjail;")))
    one_job(builder)
    deps = spool.get(nosy.id).stages.dependencies
    assert deps.status is StageStatus.nonzero_exit
    assert "access to absolute path '/home/nixjail' is forbidden in restricted mode" \
        in deps.stderr


def test_job_directories_and_cgroups_are_removed(builder, spool: Spool):
    spool.create(request(shell()))
    one_job(builder)
    config: BuilderConfig = builder.config
    leftovers = [p for p in config.work_dir.iterdir() if p.is_dir()]
    assert leftovers == []
    if config.cgroup_parent is not None:
        mine = [p for p in config.cgroup_parent.iterdir()
                if p.is_dir() and p.name.startswith(f"{os.getpid()}-")]
        assert mine == []




def test_a_jobs_tasks_are_bounded_whoever_runs_them(builder):
    # Builders run as build users, out of reach of the client's rlimits: only
    # the job cgroup's pids limit stops a fork bomb there before the host's
    # pids run out.
    config: BuilderConfig = builder.config
    assert config.cgroup_parent is not None, "no job cgroups on this machine"
    group = JobCgroup(config.cgroup_parent, f"{os.getpid()}-tasks-{salt()}",
                      64 * 1024 * 1024, max_tasks=8)
    try:
        assert group.tasks_limit_file is not None, "no pids controller for job cgroups"
        assert group.tasks_limit_file.read_text().strip() == "8"
        forks = subprocess.run(group.join_argv([
            "setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
            "/bin/sh", "-c",
            "for i in $(seq 30); do sleep 30 >/dev/null 2>&1 & done; echo started"]),
            capture_output=True, text=True, timeout=30, check=False)
        # The shell's fork is refused once the cgroup holds 8 tasks.
        assert "started" not in forks.stdout and "Cannot fork" in forks.stderr, forks
        assert 0 < len(group.pids()) <= 8, group.pids()
    finally:
        group.remove()
    assert not group.path.exists()
    assert group.pids_path is None or not group.pids_path.exists()


def test_a_small_job_of_a_large_cache_builder_is_within_its_memory(builder):
    # A child reports its spawner's peak memory as its own (the kernel records
    # it at exec): a cache builder larger than a job's limit must not judge
    # each job it runs past that limit.
    config: BuilderConfig = builder.config
    held = bytearray(300 << 20)
    held[::4096] = b"\x01" * len(held[::4096])  # resident, not just mapped
    job_dir = config.work_dir / f"small-{salt()}"
    prepare_job_dir(job_dir, "{}", config.jail)
    run = run_jail(config.jail, job_dir, limits(memory_mib=256, wall_time_s=10), cgroup=None,
                   command=["/bin/bash", "-c", "echo small"])
    del held
    assert run.result.status is StageStatus.ok, run.result
    assert run.result.memory_kib < 256 * 1024, run.result
