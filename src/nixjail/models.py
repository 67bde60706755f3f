"""The submission contract: the one source of truth for every part and client.

The API validates requests with these models and publishes their JSON schema as
its OpenAPI document; the spool stores `Submission` as JSON; the runner and the
cache builder fill in `StageResult`s.
"""

from __future__ import annotations

import base64
import re
import secrets
import threading
import time
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from nixjail.errors import Conflict, InvalidInput, LeaseLost

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


class JsonSchemaRule:
    """Publishes in a type's JSON schema what its Python validator checks.

    The validators keep their readable reasons; these keywords let the
    OpenAPI document say the same rule, so a client that validates against
    the document is refused by the server for nothing the document allows.
    """

    def __init__(self, **keywords: Any) -> None:
        self.keywords = keywords

    def __get_pydantic_json_schema__(self, core_schema: CoreSchema,
                                     handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return {**handler(core_schema), **self.keywords}


def _whole_number(value: Any) -> Any:
    # A JSON number with a zero fraction (256.0) is an integer to JSON Schema;
    # strict mode would refuse it, while still refusing "256" and true.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


JsonInt = Annotated[int, BeforeValidator(_whole_number)]
# The bound inside the annotation: on an `X | None` field, pydantic would
# publish it as "gt", which JSON Schema does not know.
PositiveJsonInt = Annotated[int, Field(gt=0), BeforeValidator(_whole_number)]

# ECMA 262 patterns, as JSON Schema reads them (`$` is the end of the string).
NO_NUL_PATTERN = r"^[^\x00]*$"
# One component of a file name: not empty, ".", or "..", and no "/", "\" or NUL.
_NAME_PART = r"(?:[^/\\\x00.][^/\\\x00]*|\.[^/\\\x00.][^/\\\x00]*|\.\.[^/\\\x00]+)"
FILE_NAME_PATTERN = rf"^{_NAME_PART}(?:/{_NAME_PART})*$"
# Padded standard base64, the only form a `base64` file content may take.
BASE64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
_BASE64 = re.compile(BASE64_PATTERN)


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL bytes")
    return value


NoNulText = Annotated[str, AfterValidator(_no_nul), JsonSchemaRule(pattern=NO_NUL_PATTERN)]


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

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "if": {"properties": {"encoding": {"const": FileEncoding.base64.value}},
               "required": ["encoding"]},
        "then": {"properties": {"content": {"pattern": BASE64_PATTERN,
                                            "contentEncoding": "base64"}}},
    })

    content: str
    encoding: FileEncoding = FileEncoding.utf8

    @model_validator(mode="after")
    def _decodable(self) -> FileContent:
        # One regular rule, the one the document states, rather than what
        # this Python's decoder happens to let through (it takes "AAAA=").
        if self.encoding is FileEncoding.base64 and not _BASE64.fullmatch(self.content):
            raise ValueError("content is not valid base64: it must be standard, padded "
                             "base64 (A-Z, a-z, 0-9, '+', '/', then '=' to a multiple of 4)")
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
    memory_mib: PositiveJsonInt | None = Field(default=None, description="Peak memory")
    processes: PositiveJsonInt | None = Field(
        default=None, description="Processes and threads")
    output_kib: PositiveJsonInt | None = Field(
        default=None, description="stdout and stderr, each")
    file_size_kib: PositiveJsonInt | None = Field(
        default=None, description="Largest file the stage may write")


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
        description="Relative path to content; a plain string is UTF-8 text. No file "
        "may lie under another one (`a` and `a/b`)",
        # On the field, not the key type: pydantic would turn a key pattern
        # into patternProperties, which lets every other name through.
        json_schema_extra={"propertyNames": {
            "pattern": FILE_NAME_PATTERN, "maxLength": MAX_PATH_BYTES,
            "description": f"A relative POSIX path of at most {MAX_PATH_BYTES} bytes "
            "in UTF-8, without empty, '.' or '..' components, NUL or backslash"}})
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
    exit_code: JsonInt | None = None
    signal: JsonInt | None = None
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    stdout_binary: bool = Field(
        default=False, description="stdout held bytes that are not printable text: not "
        "UTF-8 (shown as U+FFFD), or control characters other than tab, newline and CR")
    stderr_binary: bool = Field(default=False, description="The same, for stderr")
    wall_time_ms: JsonInt = Field(default=0, ge=0)
    cpu_time_ms: JsonInt = Field(default=0, ge=0)
    memory_kib: JsonInt = Field(default=0, ge=0)
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


_last_id_ns = 0
_id_lock = threading.Lock()


def new_submission_id() -> str:
    """A 26-character id that sorts by creation: 16 hex digits of nanoseconds
    since the epoch, then 10 random ones.

    Within a process each id's time is above the last one's, even when the
    clock gives the same nanosecond twice or steps back; across processes the
    clock's nanoseconds order them.
    """
    global _last_id_ns
    with _id_lock:
        _last_id_ns = max(time.time_ns(), _last_id_ns + 1)
        stamp = _last_id_ns
    return f"{stamp:016x}{secrets.token_hex(5)}"


def utcnow() -> datetime:
    return datetime.now(UTC)


# What a job is: building the environment (the cache builders) or running
# the stages (the workers); the spool's queues have the same names.
Job = Literal["dependencies", "run"]
# An error message is a sentence, not a log: longer ones are cut.
MAX_ERROR_CHARS = 2000
# What nixjail itself may add to a stage's stderr beyond what the stage wrote:
# the jail's own complaint (container init keeps 64 KiB of it) and a line or two.
NOTE_CHARS = 128 * 1024


def output_chars_max(output_kib: int) -> int:
    """The most characters stdout or stderr of a stage capped at `output_kib`
    holds: every byte the stage wrote decodes to at most one character
    (an undecodable one to U+FFFD), and nixjail's note comes on top."""
    return output_kib * 1024 + NOTE_CHARS


class Submission(BaseModel):
    """A submission as the spool keeps it and the API returns it.

    It owns its status: every change goes through one of the transitions
    below (`start`, `record`, `complete`, `requeue`, `cancel`), and
    `outcome` alone decides how it ended from its stages. The spool only
    stores it, under its lock, and moves its job between queues.
    """

    id: str
    status: SubmissionStatus
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = Field(default=None, description="When it ended")
    attempts: int = Field(
        default=0, ge=0,
        description="Tries of the job it is on now (building its environment, then "
        "running it): 1 on the first try, more after a worker was lost")
    error: str | None = Field(default=None,
                              description="Why nixjail failed it, when its status is error")
    request: SubmissionRequest
    limits: ResolvedStageLimits = Field(
        description="The limits it runs under: the request's, the server's defaults "
        "for the rest, fixed when it was accepted")
    stages: Stages = Field(default_factory=Stages)
    environment: Environment | None = Field(
        default=None, description="Set once the cache builders have built the environment")
    owner: str | None = Field(
        default=None,
        description="The tenant that submitted it: its token's tenant in the tokens file; "
        "null when the server had no tokens file (one tenant)")

    @classmethod
    def new(cls, request: SubmissionRequest, limits: ResolvedStageLimits, *,
            owner: str | None = None) -> Submission:
        now = utcnow()
        return cls(id=new_submission_id(), status=SubmissionStatus.queued,
                   created_at=now, updated_at=now, request=request, limits=limits,
                   owner=owner)

    # -- transitions ---------------------------------------------------------------

    def _ensure_open(self) -> None:
        if self.status.ended:
            raise LeaseLost(f"submission {self.id} has ended")

    def start(self, job: Job) -> None:
        """A worker took its job."""
        self._ensure_open()
        self.status = SubmissionStatus.building if job == "dependencies" \
            else SubmissionStatus.running
        self.attempts += 1

    def record(self, job: Job, stage: StageName, result: StageResult) -> None:
        """A stage's result, as soon as it is known."""
        if job == "dependencies" and stage != "dependencies":
            raise InvalidInput("stage", "a dependencies job reports the dependencies stage only")
        output_kib = getattr(self.limits, stage).output_kib
        for name in ("stdout", "stderr"):
            chars = len(getattr(result, name))
            if chars > output_chars_max(output_kib):
                raise InvalidInput(
                    f"result.{name}", f"{chars} characters is more than the {stage} stage's "
                    f"output_kib of {output_kib} lets it hold ({output_chars_max(output_kib)}, "
                    "nixjail's own note included)")
        self._ensure_open()
        setattr(self.stages, stage, result)

    def complete(self, job: Job, *, error: str | None = None,
                 environment: Environment | None = None) -> bool:
        """Its job is over; True when a run job follows (the environment was built)."""
        self._ensure_open()
        if error is not None:
            self._end(SubmissionStatus.error, error)
            return False
        if job == "dependencies":
            if self.stages.dependencies is None:
                self._end(SubmissionStatus.error, "the cache builder completed its job "
                          "without reporting the dependencies stage")
                return False
            if self.stages.dependencies.status is StageStatus.ok:
                self.status = SubmissionStatus.queued
                self.environment = environment
                self.attempts = 0  # a new job begins
                return True
        elif self.stages.compile is None and self.stages.run is None:
            self._end(SubmissionStatus.error,
                      "the worker completed its job without reporting a stage")
            return False
        self._end(*self.outcome())
        return False

    def requeue(self, reason: str, max_attempts: int, *, tried: bool = True) -> bool:
        """Its worker was lost; True when the job goes back to its queue, False
        when it ended (gave up after `max_attempts`, or had ended already).
        A try that never reached the submission (`tried` false) is not counted."""
        if self.status.ended:
            return False
        if not tried:
            self.attempts = max(0, self.attempts - 1)
        if self.attempts >= max_attempts:
            self._end(SubmissionStatus.error,
                      f"gave up after {self.attempts} attempts: {reason}")
            return False
        self.status = SubmissionStatus.queued
        self.error = None
        return True

    def cancel(self) -> None:
        if self.status.ended:
            raise Conflict(f"submission {self.id} has already ended as {self.status}")
        self._end(SubmissionStatus.cancelled, None)

    def _end(self, status: SubmissionStatus, error: str | None) -> None:
        self.status = status
        self.error = error if error is None or len(error) <= MAX_ERROR_CHARS \
            else error[:MAX_ERROR_CHARS - 1] + "…"
        self.finished_at = utcnow()
        for stage in STAGES:
            if getattr(self.stages, stage) is None:
                setattr(self.stages, stage, StageResult.skipped())

    def outcome(self) -> tuple[SubmissionStatus, str | None]:
        """How its stages say it ended, and the reason when that is `error`:
        error when nixjail itself failed in a stage, failed when the environment
        or the compile step failed, done when run ran, whatever its exit code."""
        for stage in STAGES:
            result = getattr(self.stages, stage)
            if result is not None and result.status is StageStatus.error:
                detail = result.stderr.strip().splitlines()[-1:] or ["no detail given"]
                return SubmissionStatus.error, f"the {stage} stage failed: {detail[0]}"
        deps, comp = self.stages.dependencies, self.stages.compile
        if deps is not None and deps.status not in (StageStatus.ok, StageStatus.skipped):
            return SubmissionStatus.failed, None
        if comp is not None and comp.status not in (StageStatus.ok, StageStatus.skipped):
            return SubmissionStatus.failed, None
        if self.stages.run is not None and self.stages.run.status is not StageStatus.skipped:
            return SubmissionStatus.done, None
        return SubmissionStatus.error, "the run stage never ran"


class StageSummary(BaseModel):
    """A stage result without its outputs."""

    status: StageStatus
    exit_code: int | None = None
    signal: int | None = None
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    wall_time_ms: int = 0
    cpu_time_ms: int = 0
    memory_kib: int = 0
    cached: bool | None = None


class SubmissionSummary(BaseModel):
    """A submission without its request (files, scripts, stdin) or outputs:
    what a list shows, and `?view=summary` of one. Its size is bounded
    (`error` is at most MAX_ERROR_CHARS), so a page of them is too."""

    id: str
    status: SubmissionStatus
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    attempts: int = 0
    error: str | None = None
    cache: bool
    owner: str | None = None
    stages: dict[StageName, StageSummary | None]

    @classmethod
    def of(cls, submission: Submission) -> SubmissionSummary:
        stages = {}
        for stage in STAGES:
            result = getattr(submission.stages, stage)
            stages[stage] = None if result is None else StageSummary.model_validate(
                result.model_dump(exclude={"stdout", "stderr"}))
        return cls(id=submission.id, status=submission.status,
                   created_at=submission.created_at, updated_at=submission.updated_at,
                   finished_at=submission.finished_at, attempts=submission.attempts,
                   error=submission.error, cache=submission.request.cache,
                   owner=submission.owner, stages=stages)


class SubmissionPage(BaseModel):
    """One page of `GET /v1/submissions`, newest first; `next_cursor` fetches the next."""

    items: list[SubmissionSummary]
    next_cursor: str | None = None


class Accepted(BaseModel):
    id: str
    status: SubmissionStatus
    url: str
