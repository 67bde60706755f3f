"""The warm pool: containers started ahead of need, so a submission's run
does not wait for `docker create` and `start` and container init's start.

A container is made for one environment: its closure is mounted when the
container is created, so the pool keeps containers by environment (`PoolKey`)
and learns which ones to keep from what runs. Each container serves exactly
one submission: `take` hands it over (its container init still waiting for
its job on stdin, nothing of any submission in it yet) and a replacement of
the same environment starts at once, in the background. A submission of an
environment the pool holds none of runs in a fresh container, and the pool
then makes room for that environment, giving up the container of the
environment used longest ago.

Pool containers are created with the server's default limits; a submission
whose limits need more processes than that gets a fresh container, and its
memory limit is set stage by stage as for any container.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import docker.errors
import requests.exceptions
from docker.models.containers import Container

from nixjail import docker as nj_docker
from nixjail import nix
from nixjail.errors import NixjailError

log = logging.getLogger(__name__)

# The environment a container is made for: its inputs and script store
# paths, or None for a submission that builds its environment in its container.
PoolKey = tuple[str, str] | None
# How long a pool container's init waits for its job before it gives up: the
# pool replaces the containers it holds long before that.
POOL_JOB_WAIT_S = 24 * 3600
# After a container could not be made, the next try waits this long (doubled
# each time, up to the maximum): dockerd may be away.
RETRY_S = 1.0
RETRY_MAX_S = 30.0


@dataclass
class WarmContainer:
    """A started container whose init waits for its job, and the GC roots
    that hold its environment's closure (the taker removes them after the run)."""

    container: Container
    channel: nj_docker.InitChannel
    spec: nj_docker.ContainerSpec
    roots: list[Path] = field(default_factory=list)


# Makes one container for a key: name → (its spec, its roots). Given by the runner.
Prepare = Callable[[PoolKey, str], tuple[nj_docker.ContainerSpec, list[Path]]]


class WarmPool:
    def __init__(self, docker_client: docker.DockerClient, size: int, prepare: Prepare) -> None:
        self.docker = docker_client
        self.size = size
        self.prepare = prepare
        self._lock = threading.Condition()
        # Ready containers by key, and each key's place: least recently used first.
        self._ready: OrderedDict[PoolKey, list[WarmContainer]] = OrderedDict()
        # Containers to make, in order (a key appears once per container wanted).
        self._wanted: list[PoolKey] = []
        self._making = 0
        self._discards: list[threading.Thread] = []  # under the lock
        self._stopping = False
        self._filler = threading.Thread(target=self._fill, name="warm-pool", daemon=True)
        self._filler.start()

    # -- what the runner calls ------------------------------------------------

    def take(self, key: PoolKey, fits: Callable[[nj_docker.ContainerSpec], bool]
             ) -> WarmContainer | None:
        """A ready container of `key` that `fits`, or None. A taken one is
        replaced at once; when there was none, containers of `key` fill the
        room the pool has left, or take the place of one of the environment
        used longest ago."""
        with self._lock:
            if self._stopping:
                return None
            ready = self._ready.get(key, [])
            taken = next((warm for warm in ready if fits(warm.spec)), None)
            if taken is not None:
                ready.remove(taken)
            self._ready[key] = ready
            self._ready.move_to_end(key)
            free = self.size - self._held() - len(self._wanted)
            if taken is not None:
                self._wanted.append(key)  # its replacement
            elif free > 0:
                self._wanted += [key] * free  # a new environment fills the room left
            elif (victim := self._least_recent_other(key)) is not None:
                self._wanted.append(key)
                self._discard_later(victim)
            self._lock.notify_all()
        return taken

    def stop(self) -> None:
        """Remove every container the pool holds; none is made after."""
        with self._lock:
            self._stopping = True
            self._wanted.clear()
            held = [warm for ready in self._ready.values() for warm in ready]
            self._ready.clear()
            self._lock.notify_all()
            self._lock.wait_for(lambda: self._making == 0, timeout=60)
        for warm in held:
            _discard(warm)
        for thread in self._discards:  # evicted ones: gone, roots too, before the exit
            thread.join(timeout=60)

    def ready_count(self, key: PoolKey) -> int:
        with self._lock:
            return len(self._ready.get(key, []))

    def wait_ready(self, key: PoolKey, count: int, timeout_s: float) -> bool:
        """Whether `count` containers of `key` became ready within `timeout_s`."""
        with self._lock:
            return self._lock.wait_for(lambda: len(self._ready.get(key, [])) >= count,
                                       timeout=timeout_s)

    # -- inside ---------------------------------------------------------------

    def _held(self) -> int:
        return sum(len(ready) for ready in self._ready.values()) + self._making

    def _least_recent_other(self, key: PoolKey) -> WarmContainer | None:
        for other, ready in self._ready.items():  # least recently used first
            if other != key and ready:
                return ready.pop(0)
        return None

    def _discard_later(self, warm: WarmContainer) -> None:
        thread = threading.Thread(target=_discard, args=(warm,), name="warm-pool-discard",
                                  daemon=True)
        self._discards = [t for t in self._discards if t.is_alive()] + [thread]
        thread.start()

    def _fill(self) -> None:
        pause = RETRY_S
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._stopping or bool(self._wanted))
                if self._stopping:
                    return
                key = self._wanted.pop(0)
                self._making += 1
            warm: WarmContainer | None = None
            failure: Exception | None = None
            try:
                warm = self._make(key)
            except (NixjailError, docker.errors.DockerException,
                    requests.exceptions.RequestException) as exc:
                failure = exc
            with self._lock:
                if warm is not None and not self._stopping:
                    self._ready.setdefault(key, []).append(warm)
                    warm = None
                elif failure is not None and not self._stopping:
                    self._wanted.append(key)
                if warm is None:
                    self._making -= 1
                    self._lock.notify_all()
            if warm is not None:
                # Made while the pool stopped: still counted as being made, so
                # `stop` returns only once it and its GC roots are gone.
                try:
                    _discard(warm)
                finally:
                    with self._lock:
                        self._making -= 1
                        self._lock.notify_all()
            if failure is None:
                pause = RETRY_S
                continue
            log.warning("warm pool: cannot start a container (again in %g s): %s",
                        pause, failure)
            with self._lock:
                self._lock.wait_for(lambda: self._stopping, timeout=pause)
            pause = min(2 * pause, RETRY_MAX_S)

    def _make(self, key: PoolKey) -> WarmContainer:
        name = f"nixjail-pool-{secrets.token_hex(6)}"
        spec, roots = self.prepare(key, name)
        container = None
        try:
            container = nj_docker.create(self.docker, spec)
            channel = nj_docker.InitChannel(container)
            container.start()
        except BaseException:
            if container is not None:
                with contextlib.suppress(docker.errors.DockerException,
                                         requests.exceptions.RequestException):
                    nj_docker.remove(container)
            for root in roots:
                nix.remove_gc_root(root)
            raise
        return WarmContainer(container, channel, spec, roots)


def _discard(warm: WarmContainer) -> None:
    warm.channel.close()
    try:
        nj_docker.remove(warm.container)
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        log.warning("warm pool: removing %s: %s", warm.container.name, exc)
    for root in warm.roots:
        nix.remove_gc_root(root)

