"""A whole nixjail on this host: `nixjail api` and `nixjail runner` as real
processes, real dockerd and the runner image, the fixture nixpkgs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import pytest

from nixjail import docker as nj_docker

REPO = Path(__file__).resolve().parents[2]
FIXTURE_NIXPKGS = REPO / "tests" / "fixtures" / "nixpkgs"
SHELL_NIX = "{ pkgs ? import <nixpkgs> {} }: pkgs.mkShell { packages = [ pkgs.busybox ]; }"
NIXJAIL = [sys.executable, "-m", "nixjail.cli.main"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Stack:
    base: Path
    url: str
    settings_file: Path
    runner: subprocess.Popen | None = None
    runner_name: str = ""
    token: str | None = None
    cache: CacheSetup | None = None

    def start_runner(self) -> subprocess.Popen:
        env = {**os.environ, "NIXJAIL_RUNNER_NAME": self.runner_name}
        log = open(self.base / "runner.log", "ab")  # noqa: SIM115 - lives with the process
        self.runner = subprocess.Popen(
            [*NIXJAIL, "runner", "--settings", str(self.settings_file)],
            env=env, stdout=log, stderr=log)
        return self.runner

    def stop_runner(self, sig: int = signal.SIGTERM) -> None:
        if self.runner is not None and self.runner.poll() is None:
            self.runner.send_signal(sig)
            self.runner.wait(timeout=30)

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=120) as answer:
                return answer.status, json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as refused:
            return refused.code, json.loads(refused.read() or b"null")

    def submit(self, wait: float = 90, **fields: object) -> dict:
        # A field given as None is left out (shell_nix, when naming an environment).
        body = {key: value for key, value in {"shell_nix": SHELL_NIX, **fields}.items()
                if value is not None}
        status, submission = self.request("POST", "/v1/submissions?wait=5", body)
        assert status in (200, 202), submission
        return self.wait(submission["id"], wait)

    def wait(self, submission_id: str, wait: float = 90) -> dict:
        """The submission once ended; fails at once if the runner died meanwhile."""
        deadline = time.monotonic() + wait
        while True:
            status, submission = self.request(
                "GET", f"/v1/submissions/{submission_id}?wait=2")
            assert status == 200, submission
            if submission["status"] in ("done", "failed", "error", "cancelled"):
                return submission
            assert self.runner is None or self.runner.poll() is None, (
                "the runner died: " + (self.base / "runner.log").read_text()[-3000:])
            assert time.monotonic() < deadline, submission


def wait_for_http(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2):
                return
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def our_containers(runner_name: str, *, warm: bool = False) -> list:
    """The runner's submission containers; with `warm`, its warm pool's
    containers that no submission took yet (named nixjail-pool-*) instead."""
    # Sparse: without a look at each one, which a removal under way would fail.
    listed = docker.from_env().containers.list(
        all=True, sparse=True, filters={"label": f"org.nixjail.runner={runner_name}"})
    return [container for container in listed
            if any(name.startswith("/nixjail-pool-") for name in container.attrs.get(
                "Names", [])) == warm]


def containers_left(runner_name: str, timeout_s: float = 10) -> list:
    """The runner's submission containers still there after `timeout_s`: the
    runner removes a container once the submission's end is recorded, so
    just after the answer it may be on its way out."""
    deadline = time.monotonic() + timeout_s
    while (left := our_containers(runner_name)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def our_container_names(runner_name: str, *, running: bool = False) -> list[str]:
    """Names of the runner's containers (only those started, with `running`);
    a sparse container knows them from the listing alone."""
    return [name.lstrip("/") for container in our_containers(runner_name)
            if not running or container.attrs.get("State") == "running"
            for name in container.attrs.get("Names", [])[:1]]


@dataclass
class CacheSetup:
    """A cache builder publishing to a signed file:// cache served on loopback,
    and a worker store of its own that substitutes from it."""

    public_key: str
    trusted_key: str
    cache_dir: Path
    cache_url: str
    worker_store_root: Path
    run_cache_builder: bool = True
    fallback_after_s: float = 120


# Where the fixture's `counted` package counts builds: the one host directory
# the cache builder's builds see in their sandbox (cache_builder.sandbox_paths).
BUILD_COUNTERS = Path(tempfile.gettempdir()) / "nixjail-build-counters"


def counter_file() -> Path:
    # The build runs as a build user of the nix-daemon: it must be able to append.
    directory = Path(tempfile.mkdtemp(prefix="counter-", dir=BUILD_COUNTERS))
    directory.chmod(0o1777)
    counter = directory / "builds"
    counter.touch(mode=0o666)
    counter.chmod(0o666)
    return counter


def counted_shell(counter: Path, salt: str) -> str:
    return ("{ pkgs ? import <nixpkgs> {} }: pkgs.mkShell { packages = [ pkgs.busybox "
            f'(pkgs.counted {{ counterFile = "{counter}"; salt = "{salt}"; }}) ]; }}')


def start_stack(base: Path, *, remote_runner: bool = False,
                cache: CacheSetup | None = None, extra_settings: str = "",
                runner_settings: str = "") -> Iterator[Stack]:
    """API and runner on this host; `remote_runner` makes the runner lease over
    HTTP with a worker token, as a worker host of its own does; `cache` adds a
    cache builder, its binary cache and the expiry timer's passes;
    `extra_settings` (TOML tables) ends the settings file, `runner_settings`
    (TOML keys) ends its [runner] table."""
    if not (FIXTURE_NIXPKGS / "bin" / "busybox").exists():
        pytest.fail("the fixture nixpkgs is not prepared: run scripts/bootstrap")
    port = free_port()
    settings_file = base / "settings.toml"
    # The cache builder's jail runs as an unprivileged uid that must reach its
    # job's files under the run dir, as it does under /run/nixjail.
    run_dir = Path(tempfile.mkdtemp(prefix="nixjail-run-"))
    run_dir.chmod(0o755)
    runner_name = f"test-{base.name}-{os.getpid()}"
    url = f"http://127.0.0.1:{port}"
    api_auth = runner_remote = runner_cache = cache_builder = ""
    if remote_runner:
        (base / "tokens").write_text("submitter sub-token\nworker work-token\n")
        (base / "worker-token").write_text("work-token\n")
        api_auth = f'tokens_file = "{base / "tokens"}"'
        runner_remote = f'api_url = "{url}"\napi_token_file = "{base / "worker-token"}"'
    if cache is not None:
        runner_cache = (f'store = "local?root={cache.worker_store_root}"\n'
                        f'caches = ["{cache.cache_url}"]\n'
                        f'trusted_public_keys = ["{cache.trusted_key}"]\n'
                        f'gc_roots_dir = "{base / "worker-roots"}"')
        BUILD_COUNTERS.mkdir(exist_ok=True)
        BUILD_COUNTERS.chmod(0o1777)
        cache_builder = f"""
[cache_builder]
enabled = true
sandbox_paths = ["{BUILD_COUNTERS}"]
fallback_after_s = {cache.fallback_after_s}
idle_exit_s = 600
nixpkgs = "{FIXTURE_NIXPKGS}"
roots_dir = "{base / "builder-roots"}"
publish_to = "file://{cache.cache_dir}?secret-key={base / "cache.sec"}"
"""
    settings_file.write_text(f"""
spool_dir = "{base / 'spool'}"
run_dir = "{run_dir}"
lease_s = 6

[api]
listen = "127.0.0.1:{port}"
{api_auth}

[runner]
kick_socket = "{run_dir / 'runner.sock'}"
idle_exit_s = 600
concurrency = 2
nixpkgs = "{FIXTURE_NIXPKGS}"
{runner_remote}
{runner_cache}
{runner_settings}
{cache_builder}
{extra_settings}
""")
    processes = []

    def spawn(name: str, argv: list[str]) -> subprocess.Popen:
        log = open(base / f"{name}.log", "ab")  # noqa: SIM115 - lives with the process
        process = subprocess.Popen(argv, stdout=log, stderr=log)
        processes.append(process)
        return process

    spawn("api", [*NIXJAIL, "api", "--settings", str(settings_file)])
    if cache is not None:
        # What the systemd timer does every few seconds.
        spawn("expire-leases", ["bash", "-c", f"while :; do {' '.join(NIXJAIL)} "
                                f"expire-leases --settings {settings_file}; sleep 0.5; done"])
        spawn("cache-server", [sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                               "--directory", str(cache.cache_dir),
                               cache.cache_url.rsplit(":", 1)[1]])
        if cache.run_cache_builder:
            spawn("cache-builder", [*NIXJAIL, "cache-builder", "--settings", str(settings_file)])
    stack = Stack(base=base, url=url, settings_file=settings_file, runner_name=runner_name,
                  token="sub-token" if remote_runner else None)
    try:
        wait_for_http(url)
        stack.start_runner()
        yield stack
    finally:
        stack.stop_runner()
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
        for container in [*our_containers(runner_name),
                          *our_containers(runner_name, warm=True)]:
            nj_docker.remove(container)  # gone meanwhile, or being removed: fine
        shutil.rmtree(run_dir, ignore_errors=True)


def cache_setup(base: Path, *, wrong_key: bool = False, **options: object) -> CacheSetup:
    """A fresh signing key pair and an empty cache dir for one stack."""
    cache_dir = base / "cache"
    cache_dir.mkdir()
    subprocess.run(["nix-store", "--generate-binary-cache-key", "nixjail-test-1",
                    str(base / "cache.sec"), str(base / "cache.pub")], check=True)
    public_key = (base / "cache.pub").read_text().strip()
    trusted_key = public_key
    if wrong_key:
        subprocess.run(["nix-store", "--generate-binary-cache-key", "nixjail-test-1",
                        str(base / "other.sec"), str(base / "other.pub")], check=True)
        trusted_key = (base / "other.pub").read_text().strip()
    return CacheSetup(public_key=public_key, trusted_key=trusted_key, cache_dir=cache_dir,
                      cache_url=f"http://127.0.0.1:{free_port()}",
                      worker_store_root=base / "worker-store", **options)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from start_stack(tmp_path_factory.mktemp("stack"))


@pytest.fixture(scope="module")
def remote_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from start_stack(tmp_path_factory.mktemp("remote"), remote_runner=True)


@pytest.fixture(scope="module")
def cached_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("cached")
    stack_cache = cache_setup(base)
    for stack in start_stack(base, cache=stack_cache):
        stack.cache = stack_cache
        yield stack


@pytest.fixture(scope="module")
def wrong_key_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("wrongkey")
    yield from start_stack(base, cache=cache_setup(base, wrong_key=True))


@pytest.fixture(scope="module")
def builderless_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("builderless")
    yield from start_stack(base, cache=cache_setup(base, run_cache_builder=False,
                                                   fallback_after_s=2))
