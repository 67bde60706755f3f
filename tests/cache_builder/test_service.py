"""The service around the builds: failures of the builder itself, the command,
the host daemon's socket instead of a private one."""

from __future__ import annotations

import grp
from pathlib import Path

from cb_helpers import request, shell
from test_builds import one_job

from nixjail.cache_builder.service import CacheBuilder
from nixjail.cli.main import main
from nixjail.client import SpoolLeaseSource
from nixjail.models import StageStatus, SubmissionStatus
from nixjail.settings import Settings
from nixjail.spool import Queue, Spool


def test_a_failure_of_the_builder_gives_the_job_back(settings: Settings, spool: Spool,
                                                     base: Path):
    # Publishing cannot work (no such key): not the submission's fault.
    settings.cache_builder.publish_to = f"file://{base}/cache?secret-key={base}/no-such-key"
    builder = CacheBuilder(settings, SpoolLeaseSource(spool, settings), spool=spool,
                           name="cb@broken")
    sub = spool.create(request(shell()))
    one_job(builder)
    again = spool.get(sub.id)
    assert again.status is SubmissionStatus.queued and again.attempts == 1
    assert spool.queued(Queue.dependencies) == [sub.id]
    assert again.stages.dependencies is None


def test_the_command_builds_the_queue_and_exits_when_idle(settings: Settings, spool: Spool,
                                                          base: Path):
    ids = [spool.create(request(shell())).id for _ in range(3)]
    toml = base / "settings.toml"
    cb = settings.cache_builder
    toml.write_text(
        f'spool_dir = "{settings.spool_dir}"\nrun_dir = "{settings.run_dir}"\n'
        f'[cache_builder]\nenabled = true\nnixpkgs = "{cb.nixpkgs}"\n'
        f'roots_dir = "{cb.roots_dir}"\nnsjail = "{cb.nsjail}"\nconcurrency = 3\n')
    assert main(["cache-builder", "--settings", str(toml), "--idle-exit", "0"]) == 0
    for submission_id in ids:
        done = spool.get(submission_id)
        assert done.stages.dependencies.status is StageStatus.ok
        assert done.environment is not None
    assert sorted(spool.queued(Queue.run)) == sorted(ids)


def test_builds_through_the_host_daemon(settings: Settings, spool: Spool):
    socket_dir = Path("/nix/var/nix/daemon-socket")
    settings.cache_builder.daemon = "host"
    # The socket's directory is the daemon's users' only (Debian: nix-users).
    settings.cache_builder.jail_gid = socket_dir.stat().st_gid or grp.getgrnam("nogroup").gr_gid
    builder = CacheBuilder(settings, SpoolLeaseSource(spool, settings), spool=spool,
                           name="cb@host")
    sub = spool.create(request(shell()))
    one_job(builder)
    deps = spool.get(sub.id).stages.dependencies
    assert deps.status is StageStatus.ok, deps
