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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors
from docker.models.containers import Container
from docker.utils.socket import STDERR, STDOUT, frames_iter

from nixjail.errors import ToolError

log = logging.getLogger(__name__)

LABEL_RUNNER = "org.nixjail.runner"
LABEL_SUBMISSION = "org.nixjail.submission"

# nsjail creates its namespaces itself and applies its own seccomp policy;
# Docker's profile would forbid the namespace calls (see docs/container-init.md).
NSJAIL_SECURITY_OPT = ["seccomp=unconfined"]
# Container init's own files: the stage scripts and, when the submission
# builds its environment in the container, the private Nix store.
STATE_DIR = "/var/lib/nixjail-init"


@dataclass
class ContainerSpec:
    image: str
    name: str
    labels: dict[str, str]
    memory_mib: int
    pids: int
    cpus: float
    work_dir_mib: int
    store_mib: int
    read_only_mounts: dict[Path, str] = field(default_factory=dict)


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
        tmpfs={"/work": f"size={spec.work_dir_mib}m,mode=1777,exec",
               "/tmp": "size=16m,mode=1777",
               STATE_DIR: f"size={spec.store_mib}m,mode=0755,exec"},
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
    try:
        created = api.create_container(spec.image, name=spec.name, labels=spec.labels,
                                       stdin_open=True, host_config=host_config,
                                       environment={"NIXJAIL_STATE_DIR": STATE_DIR})
    except docker.errors.ImageNotFound:
        raise ToolError(f"the runner image {spec.image} is missing: build it with "
                        "images/runner/build") from None
    except docker.errors.APIError as exc:
        raise ToolError(f"docker refused the container: {exc.explanation}") from None
    return docker_client.containers.get(created["Id"])


def set_memory(container: Container, memory_mib: int) -> None:
    """Change the whole container's memory limit (swap included) between stages."""
    memory = f"{memory_mib}m"
    container.update(mem_limit=memory, memswap_limit=memory)


def remove(container: Container) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        container.remove(force=True, v=True)


def remove_labelled(docker_client: docker.DockerClient, runner_name: str) -> list[str]:
    """Remove every container a runner of this name left behind."""
    removed = []
    for container in docker_client.containers.list(
            all=True, filters={"label": f"{LABEL_RUNNER}={runner_name}"}):
        remove(container)
        removed.append(container.name)
    return removed
