"""Typed settings shared by every nixjail service.

An operator writes them as TOML (the NixOS module renders its freeform
`settings` option to that file); every field has a default that suits an
all-in-one host. `NIXJAIL_SETTINGS` names the file when no `--settings` flag
does.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from nixjail.errors import InvalidInput
from nixjail.models import (
    CATALOG_NAME_PATTERN,
    ResolvedLimits,
    ResolvedStageLimits,
    SubmissionRequest,
    base64_chars,
    output_chars_max,
)

SETTINGS_ENV = "NIXJAIL_SETTINGS"
# The most bytes a byte of a stage's output takes in a JSON body: a control
# character travels as `\u0001`, an undecodable byte (read as U+FFFD) as
# `\ufffd`; no character takes more per byte it came from.
JSON_BYTES_PER_OUTPUT_BYTE = 6
# A stage report's other fields (token, status, figures), generously.
REPORT_FIELDS_BYTES = 64 * 1024

# TOML has no null: "never" is how a settings file says an idle exit never comes.
NEVER = "never"
Seconds = Annotated[float | None, BeforeValidator(lambda v: None if v == NEVER else v)]


def _default_limits() -> ResolvedStageLimits:
    return ResolvedStageLimits(
        dependencies=ResolvedLimits(wall_time_s=300, cpu_time_s=300, memory_mib=2048,
                                    processes=256, output_kib=1024, file_size_kib=1048576),
        compile=ResolvedLimits(wall_time_s=30, cpu_time_s=30, memory_mib=1024,
                               processes=64, output_kib=64, file_size_kib=65536),
        run=ResolvedLimits(wall_time_s=5, cpu_time_s=5, memory_mib=256,
                           processes=32, output_kib=64, file_size_kib=1024),
    )


def _maximum_limits() -> ResolvedStageLimits:
    return ResolvedStageLimits(
        dependencies=ResolvedLimits(wall_time_s=1800, cpu_time_s=1800, memory_mib=8192,
                                    processes=1024, output_kib=4096, file_size_kib=4194304),
        compile=ResolvedLimits(wall_time_s=120, cpu_time_s=120, memory_mib=4096,
                               processes=256, output_kib=1024, file_size_kib=262144),
        run=ResolvedLimits(wall_time_s=60, cpu_time_s=60, memory_mib=2048,
                           processes=256, output_kib=1024, file_size_kib=65536),
    )


class ApiSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    listen: str = Field(default="127.0.0.1:8460",
                        description="HOST:PORT when systemd passes no socket")
    tokens_file: Path | None = Field(
        default=None,
        description="Lines of 'ROLE TOKEN [TENANT]' (ROLE: submitter, admin or worker); "
        "none means no auth and one tenant")
    max_body_bytes: int = Field(
        default=8 * 1024 * 1024, gt=0,
        description="Largest body but a worker's stage report, whose cap follows from "
        "limits_max (Settings.max_report_bytes)")
    max_wait_s: float = Field(default=60, ge=0, description="Cap of ?wait= and lease long-polls")
    threads: int = Field(default=32, gt=0, description="Requests served at once")
    max_waiters: int = Field(
        default=24, ge=0,
        description="Requests that may wait at once (?wait=, lease long-polls); more "
        "answer at once with the current state, so waiting never takes every thread")
    public_url: str | None = Field(default=None, description="Base of URLs in answers")
    max_queued: int = Field(
        default=1000, gt=0,
        description="Jobs that may wait in the queues; past it a submission is refused "
        "with 429 and Retry-After")

    @model_validator(mode="after")
    def _threads_left_for_others(self) -> ApiSettings:
        if self.max_waiters >= self.threads:
            raise ValueError(f"max_waiters ({self.max_waiters}) must be below threads "
                             f"({self.threads}), or waiting requests could take every thread")
        return self


class RunnerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    concurrency: int = Field(default=2, gt=0, description="Submissions run at once")
    idle_exit_s: Seconds = Field(
        default=30, ge=0,
        description="Exit after this long idle (the socket starts it again); none (\"never\" in "
        "TOML) runs "
        "until stopped, as a worker host of its own that leases over HTTP does")
    stop_grace_s: float = Field(
        default=10, ge=0,
        description="On SIGTERM, how long running submissions may go on; then their "
        "containers are removed and they go back to the queue")
    image: str = Field(default="nixjail-runner:latest")
    kick_socket: Path = Field(default=Path("/run/nixjail/runner.sock"))
    work_dir_mib: int = Field(default=256, gt=0, description="Size of the writable work dir")
    work_dir_inodes: int = Field(
        default=32768, gt=0,
        description="Files and directories the work dir can hold (each costs about 1 KiB of "
        "kernel memory, counted in the container's memory limit)")
    store_mib: int = Field(
        default=2048, gt=0,
        description="Size of the private store of a submission that builds its own environment")
    store_inodes: int = Field(
        default=131072, gt=0,
        description="Files and directories that private store can hold")
    cpus: float = Field(default=1.0, gt=0, description="CPUs each submission's container gets")
    pool_size: int = Field(
        default=0, ge=0,
        description="Containers kept started ahead of need (the warm pool), by the "
        "environments that ran last; each serves one submission. 0: none (`nixjail serve` "
        "without a settings file keeps 2)")
    api_url: str | None = Field(default=None,
                                description="Lease from a remote API instead of the spool")
    api_token_file: Path | None = None
    nixpkgs: Path | None = Field(default=None, description="What <nixpkgs> resolves to")
    store: str = Field(
        default="daemon",
        description="Nix store (URI) that environments are substituted into and "
        "mounted read-only from")
    caches: list[str] = Field(
        default_factory=list, description="Binary caches of the cache builders (URLs)")
    trusted_public_keys: list[str] = Field(
        default_factory=list, description="Keys the cache builders sign with")
    gc_roots_dir: Path = Field(
        default=Path("/var/lib/nixjail/gcroots/running"),
        description="GC roots of environments in use by running submissions")
    substitute_timeout_s: float = Field(default=300, gt=0)


class CacheBuilderSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        default=False,
        description="Queue dependency jobs for cache builders; when false, every "
        "submission builds its environment in its own container")
    fallback_after_s: float = Field(
        default=120, ge=0,
        description="A dependencies job no cache builder has finished after this long "
        "goes to the workers, which build the environment in the submission's container")
    concurrency: int = Field(default=2, gt=0, description="Dependency jobs built at once")
    reuse_built_s: float = Field(
        default=3600, ge=0,
        description="A shell.nix (same text, same nixpkgs setting) built less than this "
        "long ago goes straight to the run queue with that environment; 0 sends every "
        "submission to the cache builders. Must stay below gc.root_max_age_s")
    idle_exit_s: Seconds = Field(
        default=None, ge=0,
        description="Exit after this long without a job; none (\"never\" in TOML) runs until "
        "stopped")
    api_url: str | None = Field(default=None,
                                description="Lease from a remote API instead of the spool")
    api_token_file: Path | None = None
    nixpkgs: Path | None = Field(
        default=None, description="What <nixpkgs> resolves to while a shell.nix is evaluated")
    allowed_uris: list[str] = Field(
        default_factory=list,
        description="URI prefixes restricted evaluation may fetch (Nix allowed-uris)")
    roots_dir: Path = Field(default=Path("/var/lib/nixjail/gcroots/environments"),
                            description="GC roots of the built environments, named by key")
    publish_to: str | None = Field(
        default=None,
        description="Binary cache URL every built environment is copied to (with "
        "?secret-key=FILE to sign it); none when nix-serve serves this host's store")
    publish_timeout_s: float = Field(default=600, gt=0)
    nsjail: str = Field(default="nsjail", description="nsjail binary")
    jail_uid: int = Field(default=65534, ge=1,
                          description="Non-root uid the jail runs as outside (an untrusted "
                          "user to the nix-daemon)")
    jail_gid: int = Field(default=65534, ge=1)
    daemon: Literal["private", "host"] = Field(
        default="private",
        description="private: a nix-daemon of each job, inside the job's memory cgroup, "
        "so builds count against the limit; host: the host daemon's socket")
    host_daemon_socket: Path = Field(default=Path("/nix/var/nix/daemon-socket"))
    sandbox_paths: list[str] = Field(
        default_factory=list,
        description="Host paths the job's nix-daemon adds to every build's sandbox "
        "(Nix extra-sandbox-paths: PATH or INSIDE=OUTSIDE); each is visible to every "
        "submission's builders")
    fixed_output_network: bool = Field(
        default=False,
        description="Let fixed-output derivations (fetchurl and the like) use this host's "
        "network, loopback services included. Off: the job's nix-daemon and every build "
        "it runs are in a network namespace of the job's own, with a loopback of its own "
        "and nothing else (private daemon only)")
    cgroup_dir: Path | None = Field(
        default=None,
        description="Memory cgroup the jobs' cgroups are made under; none picks "
        "/sys/fs/cgroup/memory/nixjail-cache-builder (v1) or "
        "/sys/fs/cgroup/nixjail-cache-builder (v2)")


class GcSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    store: str = Field(default="auto", description="Nix store URI collected by `nixjail gc`")
    roots_dir: Path = Field(
        default=Path("/var/lib/nixjail/gcroots"),
        description="nixjail's GC roots (every symlink below, recursively)")
    root_max_age_s: float | None = Field(
        default=7 * 24 * 3600, gt=0,
        description="Roots not re-added for this long are removed; none keeps them all")
    max_freed_mib: int | None = Field(default=None, gt=0,
                                      description="Stop collecting after freeing this much")
    submission_max_age_s: float | None = Field(
        default=30 * 24 * 3600, gt=0,
        description="Ended submissions older than this are deleted (by `nixjail gc`, and "
        "hourly by `nixjail serve`); none keeps them all")


class Judge0Language(BaseModel):
    """What the Judge0 front end calls a catalog environment."""

    model_config = ConfigDict(extra="forbid")

    ids: list[Annotated[int, Field(ge=1)]] = Field(
        min_length=1, description="Its language_id(s), as Judge0 CE numbers them")
    name: str = Field(min_length=1, max_length=200, description='As Judge0 shows it, '
                      'e.g. "Bash (5.0.0)"')


class PistonRuntime(BaseModel):
    """What the Piston front end calls a catalog environment."""

    model_config = ConfigDict(extra="forbid")

    language: str = Field(min_length=1, max_length=100)
    version: str = Field(min_length=1, max_length=100)
    aliases: list[str] = Field(default_factory=list)


class CodapiCommand(BaseModel):
    """One codapi command of a sandbox: scripts replacing the environment's."""

    model_config = ConfigDict(extra="forbid")

    compile_sh: str | None = Field(default=None, description="None: the environment's")
    run_sh: str | None = Field(default=None, description="None: the environment's")


def _run_command() -> dict[str, CodapiCommand]:
    return {"run": CodapiCommand()}


class CodapiSandbox(BaseModel):
    """What the codapi front end calls a catalog environment."""

    model_config = ConfigDict(extra="forbid")

    sandbox: str = Field(min_length=1, max_length=100)
    version: str = Field(default="latest", min_length=1, max_length=100)
    commands: dict[str, CodapiCommand] = Field(default_factory=_run_command, min_length=1)


class CatalogEnvironment(BaseModel):
    """An environment the operator offers by name (GET /v1/environments)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=CATALOG_NAME_PATTERN,
                      description="What a submission's `environment` says")
    version: str = Field(default="", description="The toolchain's version, as shown")
    description: str = ""
    aliases: list[str] = Field(default_factory=list,
                               description="Other names clients may know it by")
    shell_nix: str | None = Field(default=None, description="The shell.nix, as text")
    shell_nix_file: Path | None = Field(default=None, description="...or a file holding it")
    main_file: str = Field(default="main", description="The name a lone source file takes")
    compile_sh: str | None = Field(default=None, description="Default compile script")
    run_sh: str = Field(description="Default run script")
    judge0: Judge0Language | None = Field(
        default=None, description="Offered by the Judge0 front end under these ids")
    piston: PistonRuntime | None = Field(
        default=None, description="Offered by the Piston front end as this runtime")
    codapi: CodapiSandbox | None = Field(
        default=None, description="Offered by the codapi front end as this sandbox")

    @model_validator(mode="after")
    def _one_shell_nix(self) -> CatalogEnvironment:
        if (self.shell_nix is None) == (self.shell_nix_file is None):
            raise ValueError("give shell_nix or shell_nix_file, exactly one")
        return self

    def shell_nix_text(self) -> str:
        if self.shell_nix is not None:
            return self.shell_nix
        assert self.shell_nix_file is not None
        return self.shell_nix_file.read_text()


class JudgingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_tests: int = Field(default=100, gt=0, description="Test cases a submission may carry")
    max_output_file_bytes: int = Field(
        default=1024 * 1024, gt=0,
        description="Bytes of output_files returned per run or case, all files together")


class CallbackSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # A scheme, a host and the "/" that ends it: "" or "https://judge" would
    # also let "https://judge.attacker.example/" through.
    allowed_prefixes: list[Annotated[str, Field(pattern=r"^https?://[^/?#@\s]+/")]] = Field(
        default_factory=list,
        description="URL prefixes a callback_url must start with, each at least "
        "SCHEME://HOST/ (http or https); none allows no callbacks")
    secret_file: Path | None = Field(
        default=None, description="The HMAC-SHA256 key that signs each callback")
    attempts: int = Field(default=5, gt=0, description="Tries of one callback")
    backoff_s: float = Field(default=1, gt=0,
                             description="Wait before the second try; doubled for each next")
    timeout_s: float = Field(default=10, gt=0)


# A path prefix of the API: "/" and URL-safe segments, no trailing "/".
COMPAT_PREFIX_PATTERN = r"^(/[A-Za-z0-9._~-]+)+$"
# Prefixes of nixjail's own routes, which no front end may shadow.
RESERVED_PREFIXES = ("/v1", "/healthz", "/metrics")


class CompatFrontEnd(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=False, description="Serve this front end")
    anonymous: bool = Field(
        default=False,
        description="Take requests without a token (with a tokens file): they submit as "
        "the tenant 'anonymous', rate-limited per client address")


class Judge0Settings(CompatFrontEnd):
    prefix: str = Field(default="/judge0", pattern=COMPAT_PREFIX_PATTERN,
                        description="Where its routes are: a client's base URL")
    allow_delete: bool = Field(default=False,
                               description="DELETE /submissions/{token} deletes an ended one")
    version: Literal["1.13.1", "1.14.0"] = Field(
        default="1.13.1",
        description="The Judge0 CE version GET /about reports: the table clients take "
        "language ids from")


class PistonSettings(CompatFrontEnd):
    prefix: str = Field(default="/piston", pattern=COMPAT_PREFIX_PATTERN,
                        description="Where its routes are: a client's base URL")


class CodapiSettings(CompatFrontEnd):
    prefix: str = Field(default="/codapi", pattern=COMPAT_PREFIX_PATTERN,
                        description="Where its routes are: a client's base URL")
    allowed_origins: list[Annotated[str, Field(pattern=r"^https?://[^/?#@\s]+$")]] = Field(
        default_factory=list,
        description="Origins (SCHEME://HOST[:PORT], exactly) browsers may call it from (CORS)")


class CompatSettings(BaseModel):
    """The front ends that speak Judge0's, Piston's and codapi's APIs (docs/compat.md)."""

    model_config = ConfigDict(extra="forbid")

    judge0: Judge0Settings = Field(default_factory=Judge0Settings)
    piston: PistonSettings = Field(default_factory=PistonSettings)
    codapi: CodapiSettings = Field(default_factory=CodapiSettings)
    anonymous_requests_per_minute: int = Field(
        default=30, gt=0,
        description="Submissions an anonymous client address may make per minute, per "
        "front end")

    @model_validator(mode="after")
    def _prefixes_apart(self) -> CompatSettings:
        prefixes = {"judge0": self.judge0.prefix, "piston": self.piston.prefix,
                    "codapi": self.codapi.prefix}
        for name, prefix in prefixes.items():
            for reserved in RESERVED_PREFIXES:
                if _under(prefix, reserved):
                    raise ValueError(f"compat.{name}.prefix: {prefix!r} lies under "
                                     f"nixjail's own {reserved}")
            for other, other_prefix in prefixes.items():
                if other != name and _under(prefix, other_prefix):
                    raise ValueError(f"compat.{name}.prefix: {prefix!r} lies under "
                                     f"compat.{other}.prefix {other_prefix!r}")
        return self


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    spool_dir: Path = Field(default=Path("/var/lib/nixjail"),
                            description="Submissions on disk (durable)")
    run_dir: Path = Field(default=Path("/run/nixjail"),
                          description="Leases and locks (tmpfs: a reboot drops leases)")
    lease_s: float = Field(default=30, gt=0, description="A lease lasts this long unrenewed")
    max_attempts: int = Field(default=3, gt=0)
    limits_default: ResolvedStageLimits = Field(default_factory=_default_limits)
    limits_max: ResolvedStageLimits = Field(default_factory=_maximum_limits)
    api: ApiSettings = Field(default_factory=ApiSettings)
    runner: RunnerSettings = Field(default_factory=RunnerSettings)
    cache_builder: CacheBuilderSettings = Field(default_factory=CacheBuilderSettings)
    gc: GcSettings = Field(default_factory=GcSettings)
    judging: JudgingSettings = Field(default_factory=JudgingSettings)
    callbacks: CallbackSettings = Field(default_factory=CallbackSettings)
    environments: list[CatalogEnvironment] = Field(
        default_factory=list, description="The catalog of named environments")
    compat: CompatSettings = Field(default_factory=CompatSettings)

    @model_validator(mode="after")
    def _unique_environment_names(self) -> Settings:
        seen: set[str] = set()
        for entry in self.environments:
            for name in (entry.name, *entry.aliases):
                if name in seen:
                    raise ValueError(f"environments: the name {name!r} is given twice")
                seen.add(name)
        return self

    @model_validator(mode="after")
    def _unique_front_end_names(self) -> Settings:
        # A client names an environment by these: two entries under one name
        # would make what runs depend on the catalog's order.
        claimed: dict[tuple[str, ...], str] = {}

        def claim(key: tuple[str, ...], what: str, entry: CatalogEnvironment) -> None:
            first = claimed.setdefault(key, entry.name)
            if first != entry.name:
                raise ValueError(f"environments: {what} is claimed by both {first!r} "
                                 f"and {entry.name!r}")

        for entry in self.environments:
            if entry.judge0 is not None:
                for language_id in entry.judge0.ids:
                    claim(("judge0", str(language_id)), f"Judge0 id {language_id}", entry)
            if entry.piston is not None:
                piston = entry.piston
                claim(("piston", piston.language, piston.version),
                      f"Piston {piston.language} {piston.version}", entry)
            if entry.codapi is not None:
                codapi = entry.codapi
                claim(("codapi", codapi.sandbox, codapi.version),
                      f"codapi sandbox {codapi.sandbox} {codapi.version}", entry)
        return self

    @model_validator(mode="after")
    def _reuse_within_root_age(self) -> Settings:
        # An environment reused without the cache builder renews no GC root,
        # so it may only be reused while its roots are certainly still there.
        max_age = self.gc.root_max_age_s
        if max_age is not None and self.cache_builder.reuse_built_s >= max_age:
            raise ValueError(f"cache_builder.reuse_built_s ({self.cache_builder.reuse_built_s:g})"
                             f" must be below gc.root_max_age_s ({max_age:g})")
        return self

    def catalog(self) -> dict[str, CatalogEnvironment]:
        """Every catalog environment by its name and by each of its aliases."""
        return {name: entry for entry in self.environments
                for name in (entry.name, *entry.aliases)}

    @property
    def max_report_bytes(self) -> int:
        """The largest body a legal stage report takes: stdout and stderr as
        large as the largest output_kib any stage may have, every byte at its
        worst in JSON. A worker's report is never refused below it."""
        largest = max(limits.output_kib for _, limits in self.limits_max)
        return (2 * output_chars_max(largest) * JSON_BYTES_PER_OUTPUT_BYTE
                + base64_chars(self.judging.max_output_file_bytes) + REPORT_FIELDS_BYTES)

    def resolve_limits(self, request: SubmissionRequest) -> ResolvedStageLimits:
        """Every limit of the request, with the server default where it gave none."""
        resolved = {}
        for stage, defaults in self.limits_default:
            asked = getattr(request.limits, stage).model_dump(exclude_none=True)
            resolved[stage] = defaults.model_copy(update=asked)
        return ResolvedStageLimits(**resolved)

    def validate_request(self, data: bytes | str | dict, *,
                         strict: bool = False) -> SubmissionRequest:
        """Parse a request and check its limits against this server's maxima.

        `strict` refuses values of the wrong JSON type that pydantic would
        otherwise coerce (`"cache": 0`, `"memory_mib": "256"`), as the API does.
        """
        context = {"limits_max": self.limits_max, "limits_default": self.limits_default,
                   "catalog": self.catalog(), "max_tests": self.judging.max_tests,
                   "callback_prefixes": self.callbacks.allowed_prefixes}
        if isinstance(data, dict):
            return SubmissionRequest.model_validate(data, context=context, strict=strict)
        return SubmissionRequest.model_validate_json(data, context=context, strict=strict)


def load_settings(path: Path | str | None = None) -> Settings:
    """Settings from a TOML file (or `$NIXJAIL_SETTINGS`), defaults otherwise."""
    path = path or os.environ.get(SETTINGS_ENV)
    if not path:
        return Settings()
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise InvalidInput("settings", f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput("settings", f"{path} is not valid TOML: {exc}") from None
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise InvalidInput(f"settings.{field}", first["msg"]) from None
