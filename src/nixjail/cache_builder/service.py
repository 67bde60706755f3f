"""The cache-builder service: lease dependencies jobs, N at once, build, report.

It leases from the local spool or, on a host of its own, from the API
(`LeaseSource`). Each job's lease is renewed while it builds; a job whose
lease is lost (cancelled, or expired) is killed and reports nothing more. A
crash loses no job: its lease expires and the job goes back to the queue.
With `idle_exit_s` none (the default) it runs until stopped; with a number
it exits after that long without a job (0: as soon as the queue is empty).
At start it builds the operator's catalog of environments (`environments`),
roots them where `nixjail gc` never ages them out, and publishes each to the
service (GET /v1/environments shows it built).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading

from nixjail import holders, nix, systemd
from nixjail.cache_builder import cgroup as cg
from nixjail.cache_builder.build import (
    BuilderConfig,
    build_environment,
    remove_job_dir,
    root_paths,
)
from nixjail.client import LeasedJob, LeaseSource
from nixjail.errors import LeaseLost, NixjailError
from nixjail.leasing import LeaseKeeper, lease_source, serve_jobs
from nixjail.models import StageStatus, Submission
from nixjail.settings import CatalogEnvironment, Settings
from nixjail.spool import Queue, Spool, shell_nix_sha256

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
        self.catalog_done = threading.Event()

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
        # The catalog is built beside the jobs, not before READY: a toolchain
        # may take longer to build than systemd waits for a start, and jobs
        # need not wait for it. A job of a catalog environment asked for
        # meanwhile waits on the same key's lock, then finds it built (cached).
        catalog = threading.Thread(target=self.build_catalog, name="catalog", daemon=True)
        catalog.start()
        serve_jobs(self.source, Queue.dependencies, self.holder,
                   slots=self.settings.cache_builder.concurrency,
                   idle_exit_s=self.settings.cache_builder.idle_exit_s,
                   process=self.process, stopping=self.stopping)
        # Idle (idle_exit_s) is no reason to cut the catalog's build short;
        # stopping is, and the build sees it.
        catalog.join()
        systemd.notify("STOPPING=1")

    def build_catalog(self) -> None:
        """Build every catalog environment, keep it from `nixjail gc` and publish it.

        One entry at a time, under the default dependencies limits; a failure
        is logged and the next entry built. `catalog_done` is set when all
        were tried (or the builder is stopping)."""
        try:
            keys = set()
            for entry in self.settings.environments:
                if self.stopping.is_set():
                    return
                key = self._build_catalog_entry(entry)
                if key is not None:
                    keys.add(key)
            if not self.stopping.is_set():
                self._drop_old_catalog_roots(keys)
        except Exception:
            log.exception("building the environments catalog failed")
        finally:
            self.catalog_done.set()

    def _build_catalog_entry(self, entry: CatalogEnvironment) -> str | None:
        """Build `entry`; its key, or None when it is not built."""
        try:
            shell_nix = entry.shell_nix_text()
            outcome = build_environment(
                self.config, shell_nix, self.settings.limits_default.dependencies,
                job_name=f"catalog-{entry.name}", should_stop=self.stopping.is_set)
        except LeaseLost:
            return None  # stopping
        except (OSError, NixjailError) as exc:
            log.error("building the catalog environment %s: %s", entry.name, exc)
            return None
        environment = outcome.environment
        if outcome.result.status is not StageStatus.ok or environment is None:
            log.error("the catalog environment %s did not build (%s): %s", entry.name,
                      outcome.result.status, outcome.result.stderr[-2000:])
            return None
        try:
            inputs_root, script_root = root_paths(self.config.roots_dir / nix.CATALOG_ROOTS,
                                                  environment.key)
            nix.add_gc_root(self.config.store, environment.inputs, inputs_root)
            nix.add_gc_root(self.config.store, environment.script, script_root)
            self.source.publish_environment(entry.name, environment,
                                            shell_nix_sha256=shell_nix_sha256(shell_nix))
        except NixjailError as exc:
            log.error("keeping or publishing the catalog environment %s: %s",
                      entry.name, exc)
            return None
        log.info("the catalog environment %s is built (%s, %s)", entry.name,
                 environment.key, "cached" if outcome.result.cached else "new")
        return environment.key

    def _drop_old_catalog_roots(self, keys: set[str]) -> None:
        """Let go of what entries since edited or removed were built as; the
        ordinary roots of those keys still age out as any environment does."""
        directory = self.config.roots_dir / nix.CATALOG_ROOTS
        if not directory.is_dir():
            return
        for root in directory.iterdir():
            key = root.name.rpartition("-")[0]
            if root.is_symlink() and key not in keys:
                nix.remove_gc_root(root)
                log.info("dropped the catalog root %s", root)

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
