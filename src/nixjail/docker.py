"""A thin wrapper around the Docker SDK: the one container shape nixjail runs.

Every submission container has no network, a read-only root, a bounded tmpfs
work dir, limits for the whole container, and nixjail's label so a runner
that starts after a crash finds and removes what it left.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors
import requests.exceptions
from docker.models.containers import Container
from docker.utils.socket import STDERR, STDOUT, frames_iter

from nixjail.errors import ToolError

log = logging.getLogger(__name__)

LABEL_RUNNER = "org.nixjail.runner"
LABEL_SUBMISSION = "org.nixjail.submission"
LABEL_HOLDER = "org.nixjail.holder"  # the runner process (lease holder) that made it

# nsjail creates its namespaces itself and applies its own seccomp policy;
# Docker's profile would forbid the namespace calls (see docs/container-init.md).
NSJAIL_SECURITY_OPT = ["seccomp=unconfined"]
# Container init's own files: the stage scripts and, when the submission
# builds its environment in the container, the private Nix store.
STATE_DIR = "/var/lib/nixjail-init"
# The container's own /tmp (container init's, never a jail's).
CONTAINER_TMP_MIB = 16
CONTAINER_TMP_INODES = 1024
# Kernel memory a tmpfs file costs beside its data (inode and dentry, about
# 1 KiB each as measured), charged to the container like the data.
INODE_KIB = 1


@dataclass
class ContainerSpec:
    image: str
    name: str
    labels: dict[str, str]
    memory_mib: int
    pids: int
    cpus: float
    work_dir_mib: int
    work_dir_inodes: int
    store_mib: int
    store_inodes: int
    read_only_mounts: dict[Path, str] = field(default_factory=dict)
    # How long container init waits for its job (a warm pool's container
    # waits long); None: init's own default.
    job_wait_s: float | None = None


def client() -> docker.DockerClient:
    try:
        return docker.from_env()
    except docker.errors.DockerException as exc:
        raise ToolError(f"cannot reach dockerd: {exc}") from None


class InitChannel:
    """Container init's stdin and stdout, attached before the container starts."""

    def __init__(self, container: Container) -> None:
        self.container = container
        self._socket = container.attach_socket(
            params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
        self._raw: socket.socket = getattr(self._socket, "_sock", self._socket)

    def send(self, message: dict) -> None:
        self._raw.sendall(json.dumps(message).encode() + b"\n")

    def events(self) -> Iterator[dict]:
        """Container init's JSON lines; its stderr goes to the runner's log."""
        pending = b""
        for stream, data in frames_iter(self._socket, tty=False):
            if stream == STDERR:
                for line in data.decode(errors="replace").splitlines():
                    log.info("container %s: %s", self.container.short_id, line)
                continue
            if stream != STDOUT:
                continue
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError:
                        yield {"event": "init_failed",
                               "error": f"container init wrote a line that is not JSON: "
                                        f"{line[:200]!r}"}

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._socket.close()


def create(docker_client: docker.DockerClient, spec: ContainerSpec) -> Container:
    memory = f"{spec.memory_mib}m"
    api = docker_client.api
    host_config = api.create_host_config(
        network_mode="none",
        read_only=True,
        # Bounded in bytes and in files: a file costs kernel memory too.
        tmpfs={"/work": f"size={spec.work_dir_mib}m,nr_inodes={spec.work_dir_inodes},"
                        "mode=1777,exec",
               "/tmp": f"size={CONTAINER_TMP_MIB}m,nr_inodes={CONTAINER_TMP_INODES},mode=1777",
               STATE_DIR: f"size={spec.store_mib}m,nr_inodes={spec.store_inodes},"
                          "mode=0755,exec"},
        binds={str(host): {"bind": inside, "mode": "ro"}
               for host, inside in spec.read_only_mounts.items()},
        security_opt=NSJAIL_SECURITY_OPT,
        cap_drop=["NET_RAW", "MKNOD", "AUDIT_WRITE", "SETFCAP"],
        mem_limit=memory,
        memswap_limit=memory,
        pids_limit=spec.pids,
        nano_cpus=int(spec.cpus * 1e9),
    )
    # nsjail mounts a fresh /proc for each stage, which the kernel allows only
    # when no part of the container's /proc is masked or read-only. The SDK
    # has no word for that (the CLI's `systempaths=unconfined`), the API has.
    host_config["MaskedPaths"] = []
    host_config["ReadonlyPaths"] = []

    def create_container() -> dict:
        return api.create_container(spec.image, name=spec.name, labels=spec.labels,
                                    stdin_open=True, host_config=host_config,
                                    environment=environment)

    environment = {"NIXJAIL_STATE_DIR": STATE_DIR}
    if spec.job_wait_s is not None:
        environment["NIXJAIL_JOB_WAIT_S"] = str(spec.job_wait_s)

    try:
        try:
            created = create_container()
        except docker.errors.APIError as exc:
            # Its name is taken: only by a stale container of an earlier try.
            if exc.status_code != 409 or not _remove_stale(docker_client, spec):
                raise
            created = create_container()
    except docker.errors.ImageNotFound:
        raise ToolError(f"the runner image {spec.image} is missing: build it with "
                        "images/runner/build") from None
    except docker.errors.APIError as exc:
        raise ToolError(f"docker refused the container: {exc.explanation}") from None
    return docker_client.containers.get(created["Id"])


def rename(docker_client: docker.DockerClient, container: Container,
           spec: ContainerSpec) -> None:
    """Give a created container `spec`'s name (a warm pool's container, once
    a submission takes it)."""
    try:
        try:
            container.rename(spec.name)
        except docker.errors.APIError as exc:
            if exc.status_code != 409 or not _remove_stale(docker_client, spec):
                raise
            container.rename(spec.name)
    except docker.errors.APIError as exc:
        raise ToolError(f"docker refused to rename the container: {exc.explanation}") from None


def _remove_stale(docker_client: docker.DockerClient, spec: ContainerSpec) -> bool:
    """Remove a container of this name left by an earlier try of the same job
    (one that dockerd failed before it could be removed); whether there was one."""
    try:
        stale = docker_client.containers.get(spec.name)
    except docker.errors.NotFound:
        return False
    if stale.labels.get(LABEL_RUNNER) != spec.labels.get(LABEL_RUNNER):
        return False
    remove(stale)
    return True


def tmpfs_mib(spec: ContainerSpec) -> int:
    """What the container's tmpfs mounts can hold at most, files' kernel memory included."""
    inodes = spec.work_dir_inodes + spec.store_inodes + CONTAINER_TMP_INODES
    return (spec.work_dir_mib + spec.store_mib + CONTAINER_TMP_MIB
            + -(-inodes * INODE_KIB // 1024))


def set_memory(container: Container, memory_mib: int) -> None:
    """Change the whole container's memory limit (swap included) between stages."""
    memory = f"{memory_mib}m"
    container.update(mem_limit=memory, memswap_limit=memory)


# How long to wait for another thread's removal of the same container.
REMOVAL_WAIT_S = 30


def remove(container: Container) -> None:
    """Kill and remove the container. One already gone is fine; one another
    thread is removing (a cancel, a stop) is waited for."""
    try:
        container.remove(force=True, v=True)
    except docker.errors.NotFound:
        return
    except docker.errors.APIError as exc:
        if exc.status_code != 409:
            raise
        with contextlib.suppress(docker.errors.DockerException,
                                 requests.exceptions.RequestException):
            container.wait(condition="removed", timeout=REMOVAL_WAIT_S)


def remove_labelled(docker_client: docker.DockerClient, runner_name: str, *,
                    keep: Callable[[str], bool] | None = None) -> list[str]:
    """Remove the containers of a runner of this name, except those whose
    holder (the runner process that made them) `keep` says to keep."""
    removed = []
    for container in docker_client.containers.list(
            all=True, filters={"label": f"{LABEL_RUNNER}={runner_name}"}):
        holder = container.labels.get(LABEL_HOLDER, "")
        if keep is not None and holder and keep(holder):
            continue
        remove(container)
        removed.append(container.name)
    return removed
