"""The cache-builder service: lease dependencies jobs, N at once, build, report.

It leases from the local spool or, on a host of its own, from the API
(`LeaseSource`). Each job's lease is renewed while it builds; a job whose
lease is lost (cancelled, or expired) is killed and reports nothing more. A
crash loses no job: its lease expires and the job goes back to the queue.
With `idle_exit_s` none (the default) it runs until stopped; with a number
it exits after that long without a job (0: as soon as the queue is empty).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading

from nixjail import holders, nix, systemd
from nixjail.cache_builder import cgroup as cg
from nixjail.cache_builder.build import BuilderConfig, build_environment, remove_job_dir
from nixjail.client import LeasedJob, LeaseSource
from nixjail.errors import LeaseLost, NixjailError
from nixjail.leasing import LeaseKeeper, lease_source, serve_jobs
from nixjail.models import StageStatus, Submission
from nixjail.settings import Settings
from nixjail.spool import Queue, Spool

log = logging.getLogger(__name__)

class CacheBuilder:
    def __init__(self, settings: Settings, source: LeaseSource, *, name: str | None = None,
                 spool: Spool | None = None, config: BuilderConfig | None = None) -> None:
        self.settings = settings
        self.source = source
        self.name = name or holders.builder_name()
        # One holder per process, so a restarted builder can tell its
        # predecessor's leases from its own.
        self.holder = holders.holder(self.name)
        self.spool = spool
        self.config = config or BuilderConfig.from_settings(settings)
        self.stopping = threading.Event()

    def clean_up_after_crash(self) -> None:
        """Stop what a crashed predecessor left building and give back its leases."""
        if self.config.cgroup_parent is not None:
            for path in cg.sweep(self.config.cgroup_parent, holders.pid_exists):
                log.info("stopped the leftover build in %s", path)
        if self.config.work_dir.is_dir():
            for job_dir in self.config.work_dir.iterdir():
                owner = job_dir.name.partition("-")[0]
                if job_dir.is_dir() and owner.isdigit() and not holders.pid_exists(int(owner)):
                    remove_job_dir(job_dir)
        if self.config.private_daemon:
            for chroot in nix.remove_abandoned_build_chroots(nix.store_dir(self.config.store)):
                log.info("removed the abandoned build sandbox %s", chroot)
        if self.spool is not None:
            released = self.spool.release_held_by(
                f"{self.name}/", "the cache builder holding it restarted", keep=self.holder,
                alive=lambda holder: holder != self.holder
                and holders.holder_alive(holder, names={self.name}))
            if released:
                log.info("gave back leases left behind: %s", ", ".join(released))

    def serve(self) -> None:
        """Lease and build until stopped, or idle for `idle_exit_s` when set."""
        self.clean_up_after_crash()
        systemd.notify("READY=1")
        serve_jobs(self.source, Queue.dependencies, self.holder,
                   slots=self.settings.cache_builder.concurrency,
                   idle_exit_s=self.settings.cache_builder.idle_exit_s,
                   process=self.process, stopping=self.stopping)
        systemd.notify("STOPPING=1")

    def process(self, leased: LeasedJob) -> Submission | None:
        """Build one leased job's environment and complete its lease.

        The submission as the source left it, or None when the lease was lost
        or the job was handed back.
        """
        lease, submission, limits = leased
        keeper = LeaseKeeper(self.source, lease, self.settings.lease_s / 3)
        keeper.start()
        try:
            try:
                outcome = build_environment(
                    self.config, submission.request.shell_nix, limits.dependencies,
                    job_name=submission.id,
                    should_stop=lambda: keeper.lost.is_set() or self.stopping.is_set())
            except LeaseLost as exc:
                log.info("%s", exc)
                # Stopping is this host's doing: the try does not count.
                return self._give_back(keeper, "the cache builder stopped", tried=False) \
                    if not keeper.lost.is_set() else None
            except NixjailError as exc:
                # The cache builder failed, not the submission: another
                # attempt (here or on another builder) may succeed.
                log.error("building %s: %s", submission.id, exc)
                return self._give_back(keeper, f"the cache builder failed: {exc}")
            keeper.stop()
            if keeper.lost.is_set():
                return None
            try:
                self.source.report_stage(keeper.lease, "dependencies", outcome.result)
                ok = outcome.result.status is StageStatus.ok
                return self.source.complete(
                    keeper.lease, environment=outcome.environment if ok else None)
            except LeaseLost as exc:
                log.info("completing %s: %s", submission.id, exc)
                return None
        except Exception:
            log.exception("building %s failed", submission.id)
            return self._give_back(keeper, "the cache builder failed while building it")
        finally:
            keeper.stop()

    def _give_back(self, keeper: LeaseKeeper, reason: str, *,
                   tried: bool = True) -> Submission | None:
        keeper.stop()
        with contextlib.suppress(NixjailError):
            return self.source.release(keeper.lease, reason, tried=tried)
        return None


def run_cache_builder(settings: Settings) -> None:
    """Serve as a cache builder until SIGTERM: the `nixjail cache-builder`
    command, and the cache-builder part of `nixjail serve`."""
    source, spool = lease_source(settings, settings.cache_builder.api_url,
                                 settings.cache_builder.api_token_file)
    builder = CacheBuilder(settings, source, spool=spool)
    signal.signal(signal.SIGTERM, lambda *_: builder.stopping.set())
    builder.serve()
