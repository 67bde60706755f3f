"""The submission contract: the one source of truth for every part and client.

The API validates requests with these models and publishes their JSON schema as
its OpenAPI document; the spool stores `Submission` as JSON; the runner and the
cache builder fill in `StageResult`s.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

STAGES: tuple[str, ...] = ("dependencies", "compile", "run")
StageName = Literal["dependencies", "compile", "run"]

# Text that ends up in a shell script, a Nix expression or a file name cannot
# carry NUL: bash and Nix would silently cut it there.
MAX_PATH_BYTES = 255
MAX_FILES = 256


class StageStatus(StrEnum):
    ok = "ok"
    nonzero_exit = "nonzero_exit"
    signaled = "signaled"
    time_limit = "time_limit"
    memory_limit = "memory_limit"
    output_limit = "output_limit"
    skipped = "skipped"
    error = "error"


class SubmissionStatus(StrEnum):
    queued = "queued"
    building = "building"
    running = "running"
    done = "done"
    failed = "failed"
    error = "error"
    cancelled = "cancelled"

    @property
    def ended(self) -> bool:
        return self in ENDED_STATUSES


ENDED_STATUSES = frozenset(
    {SubmissionStatus.done, SubmissionStatus.failed, SubmissionStatus.error,
     SubmissionStatus.cancelled}
)


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL bytes")
    return value


NoNulText = Annotated[str, AfterValidator(_no_nul)]


def _relative_path(value: str) -> str:
    if not value:
        raise ValueError("file name must not be empty")
    if "\x00" in value:
        raise ValueError("file name must not contain NUL bytes")
    if len(value.encode()) > MAX_PATH_BYTES:
        raise ValueError(f"file name is longer than {MAX_PATH_BYTES} bytes")
    if value.startswith("/"):
        raise ValueError("file name must be relative, not absolute")
    if "\\" in value:
        raise ValueError("file name must use '/' as separator")
    parts = value.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError("file name must not contain empty, '.' or '..' components")
    return str(PurePosixPath(value))


RelativePath = Annotated[str, AfterValidator(_relative_path)]


class FileEncoding(StrEnum):
    utf8 = "utf-8"
    base64 = "base64"


class FileContent(BaseModel):
    """A file given with an explicit encoding; base64 carries binary content."""

    model_config = ConfigDict(extra="forbid")

    content: str
    encoding: FileEncoding = FileEncoding.utf8

    @model_validator(mode="after")
    def _decodable(self) -> FileContent:
        if self.encoding is FileEncoding.base64:
            try:
                base64.b64decode(self.content, validate=True)
            except binascii.Error as exc:
                raise ValueError(f"content is not valid base64: {exc}") from None
        return self

    def decoded(self) -> bytes:
        if self.encoding is FileEncoding.base64:
            return base64.b64decode(self.content, validate=True)
        return self.content.encode()


LIMIT_FIELDS: tuple[str, ...] = (
    "wall_time_s", "cpu_time_s", "memory_mib", "processes", "output_kib", "file_size_kib",
)


class StageLimits(BaseModel):
    """Limits of one stage as a request gives them: every one optional."""

    model_config = ConfigDict(extra="forbid")

    wall_time_s: float | None = Field(default=None, gt=0, description="Wall-clock time")
    cpu_time_s: float | None = Field(default=None, gt=0, description="CPU time")
    memory_mib: int | None = Field(default=None, gt=0, description="Peak memory")
    processes: int | None = Field(default=None, gt=0, description="Processes and threads")
    output_kib: int | None = Field(
        default=None, gt=0, description="stdout and stderr, each")
    file_size_kib: int | None = Field(
        default=None, gt=0, description="Largest file the stage may write")


class ResolvedLimits(BaseModel):
    """Limits of one stage with server defaults filled in."""

    model_config = ConfigDict(extra="forbid")

    wall_time_s: float = Field(gt=0)
    cpu_time_s: float = Field(gt=0)
    memory_mib: int = Field(gt=0)
    processes: int = Field(gt=0)
    output_kib: int = Field(gt=0)
    file_size_kib: int = Field(gt=0)


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dependencies: StageLimits = Field(default_factory=StageLimits)
    compile: StageLimits = Field(default_factory=StageLimits)
    run: StageLimits = Field(default_factory=StageLimits)


class ResolvedStageLimits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dependencies: ResolvedLimits
    compile: ResolvedLimits
    run: ResolvedLimits


class SubmissionRequest(BaseModel):
    """What a submitter posts to `POST /v1/submissions`.

    Validated with `context={"limits_max": ResolvedStageLimits}` where the
    server's maxima apply: a limit above its maximum is refused, never clamped.
    """

    model_config = ConfigDict(extra="forbid")

    shell_nix: NoNulText = Field(
        min_length=1, description="The Nix expression of the toolchain, as a shell.nix")
    files: dict[RelativePath, str | FileContent] = Field(
        default_factory=dict, max_length=MAX_FILES,
        description="Relative path to content; a plain string is UTF-8 text")
    compile_sh: NoNulText | None = Field(
        default=None, description="Compile script; none skips the compile stage")
    run_sh: NoNulText = Field(min_length=1, description="Run script")
    stdin: str = Field(default="", description="Given to run.sh on its standard input")
    limits: Limits = Field(default_factory=Limits)
    cache: bool = Field(
        default=True,
        description="Build the environment on the cache builders and reuse it; "
        "false builds it inside the submission's own container")

    @field_validator("files")
    @classmethod
    def _no_file_under_file(cls, files: dict[str, Any]) -> dict[str, Any]:
        names = set(files)
        for name in files:
            parent = PurePosixPath(name).parent
            while str(parent) != ".":
                if str(parent) in names:
                    raise ValueError(f"{name!r} lies under {str(parent)!r}, which is a file")
                parent = parent.parent
        return files

    @model_validator(mode="after")
    def _within_maxima(self, info: ValidationInfo) -> SubmissionRequest:
        maxima = (info.context or {}).get("limits_max")
        if maxima is None:
            return self
        problems = []
        for stage in STAGES:
            asked: StageLimits = getattr(self.limits, stage)
            allowed: ResolvedLimits = getattr(maxima, stage)
            for name in LIMIT_FIELDS:
                value = getattr(asked, name)
                if value is not None and value > getattr(allowed, name):
                    problems.append(
                        f"limits.{stage}.{name}: {value} is above the maximum "
                        f"{getattr(allowed, name)}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def file_bytes(self) -> dict[str, bytes]:
        return {
            name: content.encode() if isinstance(content, str) else content.decoded()
            for name, content in self.files.items()
        }


class StageResult(BaseModel):
    """The one result every stage reports."""

    status: StageStatus
    exit_code: int | None = None
    signal: int | None = None
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    wall_time_ms: int = Field(default=0, ge=0)
    cpu_time_ms: int = Field(default=0, ge=0)
    memory_kib: int = Field(default=0, ge=0)
    cached: bool | None = Field(
        default=None, description="Dependencies stage only: nothing had to be built")

    @classmethod
    def skipped(cls) -> StageResult:
        return cls(status=StageStatus.skipped)


STORE_PATH_PATTERN = r"^/nix/store/[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+\-._?=]+$"


class Environment(BaseModel):
    """A submission's built environment, as the cache builder published it.

    `inputs` is the shell's input derivation output, whose closure holds every
    package of the toolchain; `script` is the environment script that each
    stage sources. Workers substitute both from the binary cache.
    """

    model_config = ConfigDict(extra="forbid")

    key: str = Field(pattern=r"^[0-9a-f]{64}$",
                     description="Hash of the shell.nix and the nixpkgs it was built with")
    inputs: str = Field(pattern=STORE_PATH_PATTERN)
    script: str = Field(pattern=STORE_PATH_PATTERN)


class Stages(BaseModel):
    dependencies: StageResult | None = None
    compile: StageResult | None = None
    run: StageResult | None = None


def new_submission_id() -> str:
    """A 26-character id that sorts by creation time (milliseconds, then random)."""
    return f"{time.time_ns() // 1_000_000:013x}{secrets.token_hex(7)[:13]}"


def utcnow() -> datetime:
    return datetime.now(UTC)


class Submission(BaseModel):
    """A submission as the spool keeps it and the API returns it."""

    id: str
    status: SubmissionStatus
    created_at: datetime
    updated_at: datetime
    attempts: int = 0
    error: str | None = None
    request: SubmissionRequest
    stages: Stages = Field(default_factory=Stages)
    environment: Environment | None = Field(
        default=None, description="Set once the cache builders have built the environment")

    @classmethod
    def new(cls, request: SubmissionRequest) -> Submission:
        now = utcnow()
        return cls(id=new_submission_id(), status=SubmissionStatus.queued,
                   created_at=now, updated_at=now, request=request)

    def outcome(self) -> SubmissionStatus:
        """The ended status the stages call for: error when nixjail itself
        failed in a stage, failed when the environment or the compile step
        failed, done when run ran, whatever its exit code."""
        stages = (self.stages.dependencies, self.stages.compile, self.stages.run)
        if any(s is not None and s.status is StageStatus.error for s in stages):
            return SubmissionStatus.error
        deps, comp = self.stages.dependencies, self.stages.compile
        if deps is not None and deps.status not in (StageStatus.ok, StageStatus.skipped):
            return SubmissionStatus.failed
        if comp is not None and comp.status not in (StageStatus.ok, StageStatus.skipped):
            return SubmissionStatus.failed
        if self.stages.run is not None and self.stages.run.status is not StageStatus.skipped:
            return SubmissionStatus.done
        return SubmissionStatus.error


class SubmissionPage(BaseModel):
    """One page of `GET /v1/submissions`; `next_cursor` fetches the next."""

    items: list[Submission]
    next_cursor: str | None = None


class Accepted(BaseModel):
    id: str
    status: SubmissionStatus
    url: str
