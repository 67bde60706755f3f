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
from datetime import UTC, datetime, timedelta
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


MAX_ARGS = 64
MAX_ARG_BYTES = 4096
MAX_OUTPUT_GLOBS = 16


def _arg(value: str) -> str:
    if "\x00" in value:
        raise ValueError("an argument must not contain NUL bytes")
    if len(value.encode()) > MAX_ARG_BYTES:
        raise ValueError(f"an argument is longer than {MAX_ARG_BYTES} bytes")
    return value


Arg = Annotated[str, AfterValidator(_arg), JsonSchemaRule(pattern=NO_NUL_PATTERN)]
Args = Annotated[list[Arg], Field(max_length=MAX_ARGS)]
# Text or bytes: a plain string is UTF-8 text; {content, encoding} may carry any bytes.
Data = str | FileContent


def data_bytes(value: Data) -> bytes:
    return value.encode() if isinstance(value, str) else value.decoded()


def _output_glob(value: str) -> str:
    _relative_path(value)
    return value


OutputGlob = Annotated[str, AfterValidator(_output_glob), JsonSchemaRule(
    pattern=FILE_NAME_PATTERN, maxLength=MAX_PATH_BYTES)]


class CheckerKind(StrEnum):
    exact = "exact"
    lines = "lines"
    tokens = "tokens"
    float = "float"
    custom = "custom"


class Checker(BaseModel):
    """How a test case's output is compared with its expected output (docs/judging.md)."""

    # check_sh with custom, and only with it, as JSON Schema says it.
    model_config = ConfigDict(extra="forbid", json_schema_extra={"oneOf": [
        {"required": ["kind", "check_sh"],
         "properties": {"kind": {"const": "custom"}, "check_sh": {"type": "string"}}},
        {"properties": {"kind": {"enum": [k.value for k in CheckerKind
                                          if k is not CheckerKind.custom]},
                        "check_sh": {"type": "null"}}},
    ]})

    kind: CheckerKind = Field(
        default=CheckerKind.lines,
        description="exact: byte for byte; lines: trailing white space of each line and "
        "trailing blank lines ignored; tokens: white-space separated words; float: tokens, "
        "numbers within abs_tol or rel_tol; custom: check_sh decides")
    abs_tol: float = Field(default=1e-6, ge=0, description="float: absolute tolerance")
    rel_tol: float = Field(default=1e-6, ge=0, description="float: relative tolerance")
    check_sh: NoNulText | None = Field(
        default=None,
        description="custom: a script run in a jail of its own with the files input, "
        "expected_output and output (also its arguments $1 $2 $3); exit 0 accepts, 1 "
        "is a wrong answer, anything else a checker error; its stdout is the message")

    @model_validator(mode="after")
    def _script_for_custom(self) -> Checker:
        if (self.kind is CheckerKind.custom) != (self.check_sh is not None):
            raise ValueError("check_sh: required with kind custom, and only with it")
        return self


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


class TestCase(BaseModel):
    """One test case: run.sh on a fresh copy of the compiled work dir."""

    model_config = ConfigDict(extra="forbid")

    name: NoNulText | None = Field(default=None, max_length=200)
    stdin: Data = Field(default="", description="run.sh's standard input")
    args: Args | None = Field(default=None,
                              description="run.sh's arguments; none takes the submission's")
    files: dict[RelativePath, Data] = Field(
        default_factory=dict, max_length=MAX_FILES,
        description="Files laid over the compiled work dir for this case only",
        json_schema_extra={"propertyNames": {"pattern": FILE_NAME_PATTERN,
                                             "maxLength": MAX_PATH_BYTES}})
    expected_output: Data | None = Field(
        default=None, description="What stdout must be; none accepts any output of a run "
        "that ended ok")
    limits: StageLimits = Field(default_factory=StageLimits,
                                description="Within the submission's run limits")
    checker: Checker | None = Field(default=None, description="None takes the submission's")


class SubmissionRequest(BaseModel):
    """What a submitter posts to `POST /v1/submissions`.

    Validated with `context={"limits_max": ResolvedStageLimits}` where the
    server's maxima apply: a limit above its maximum is refused, never clamped.
    """

    model_config = ConfigDict(extra="forbid")

    shell_nix: NoNulText | None = Field(
        default=None, min_length=1,
        description="The Nix expression of the toolchain, as a shell.nix; give it or "
        "environment")
    environment: str | None = Field(
        default=None, max_length=100,
        description="A name from GET /v1/environments instead of shell_nix; compile_sh "
        "and run_sh then default to the environment's")
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
    run_sh: NoNulText | None = Field(
        default=None, min_length=1,
        description="Run script; required unless the environment gives one")
    stdin: Data = Field(default="", description="Given to run.sh on its standard input")
    args: Args = Field(default_factory=list,
                       description="run.sh's positional parameters ($1, $2, ...)")
    tests: list[TestCase] | None = Field(
        default=None, min_length=1,
        description="Test cases: compile once, then run.sh once per case with a verdict "
        "each; at most the server's judging.max_tests")
    checker: Checker = Field(default_factory=Checker,
                             description="The test cases' checker, unless a case names one")
    stop_on_failure: bool = Field(
        default=False, description="Skip the cases after the first that is not accepted")
    output_encoding: Literal["auto", "base64"] = Field(
        default="auto",
        description="auto: outputs come as text when they are UTF-8, else base64; "
        "base64: always base64 (each output's *_encoding field says which)")
    output_files: list[OutputGlob] = Field(
        default_factory=list, max_length=MAX_OUTPUT_GLOBS,
        description="Glob patterns under the work dir: matching regular files are "
        "returned after the run (and each case), within judging.max_output_file_bytes")
    callback_url: str | None = Field(
        default=None, max_length=2000,
        description="POSTed the submission's summary when it ends, under a prefix the "
        "operator allows (callbacks.allowed_prefixes)")
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

    @model_validator(mode="after")
    def _toolchain_and_script(self, info: ValidationInfo) -> SubmissionRequest:
        # At acceptance (a catalog in the context) the environment's name is
        # resolved once, into the shell.nix and scripts stored with it.
        context = info.context or {}
        problems = []
        if "catalog" in context:
            if self.shell_nix is not None and self.environment is not None:
                problems.append("environment: give either shell_nix or environment, not both")
            elif self.environment is not None:
                entry = context["catalog"].get(self.environment)
                if entry is None:
                    problems.append(f"environment: no environment named "
                                    f"{self.environment!r} (see GET /v1/environments)")
                else:
                    self.shell_nix = entry.shell_nix_text()
                    if self.compile_sh is None:
                        self.compile_sh = entry.compile_sh
                    if self.run_sh is None:
                        self.run_sh = entry.run_sh
        if self.shell_nix is None and self.environment is None:
            problems.append("shell_nix: required, unless the submission names an environment")
        if self.run_sh is None and self.environment is None:
            problems.append("run_sh: required, unless the named environment gives one")
        defaults = context.get("limits_default")
        for index, case in enumerate((self.tests or []) if defaults is not None else []):
            for name in LIMIT_FIELDS:
                value = getattr(case.limits, name)
                run_value = getattr(self.limits.run, name) or getattr(defaults.run, name)
                if value is not None and value > run_value:
                    problems.append(f"tests[{index}].limits.{name}: {value} is above "
                                    f"the run stage's {run_value}")
        max_tests = context.get("max_tests")
        if max_tests is not None and self.tests is not None and len(self.tests) > max_tests:
            problems.append(f"tests: {len(self.tests)} cases, more than this server's "
                            f"maximum of {max_tests}")
        prefixes = context.get("callback_prefixes")
        if prefixes is not None and self.callback_url is not None and not any(
                self.callback_url.startswith(prefix) for prefix in prefixes):
            problems.append("callback_url: not under a prefix this server allows"
                            + ("" if prefixes else " (it allows no callbacks)"))
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def file_bytes(self) -> dict[str, bytes]:
        return {name: data_bytes(content) for name, content in self.files.items()}


class StageResult(BaseModel):
    """The one result every stage reports."""

    status: StageStatus
    exit_code: JsonInt | None = None
    signal: JsonInt | None = None
    stdout: str = ""
    stderr: str = ""
    stdout_encoding: FileEncoding = Field(
        default=FileEncoding.utf8,
        description="base64 when stdout was not UTF-8 (or the request asked for base64)")
    stderr_encoding: FileEncoding = FileEncoding.utf8
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    stdout_binary: bool = Field(
        default=False, description="stdout held bytes that are not printable text: not "
        "UTF-8 (then sent as base64), or control characters other than tab, newline and CR")
    stderr_binary: bool = Field(default=False, description="The same, for stderr")
    wall_time_ms: JsonInt = Field(default=0, ge=0)
    cpu_time_ms: JsonInt = Field(default=0, ge=0)
    memory_kib: JsonInt = Field(default=0, ge=0)
    cached: bool | None = Field(
        default=None, description="Dependencies stage only: nothing had to be built")
    started_at: datetime | None = None
    finished_at: datetime | None = None
    files: dict[str, FileContent] | None = Field(
        default=None, description="Run stage and cases: the files output_files matched, "
        "base64-encoded")

    @classmethod
    def skipped(cls) -> StageResult:
        return cls(status=StageStatus.skipped)

    @classmethod
    def built_before(cls, environment: Environment, wall_time_ms: int = 0) -> StageResult:
        """The dependencies stage of a shell.nix whose environment exists already."""
        return cls(status=StageStatus.ok, cached=True, wall_time_ms=wall_time_ms,
                   stdout=f"inputs: {environment.inputs}\n",
                   stderr=f"the environment {environment.key} was built before: "
                          "nothing to build\n")


class Verdict(StrEnum):
    accepted = "accepted"
    wrong_answer = "wrong_answer"
    time_limit = "time_limit"
    memory_limit = "memory_limit"
    output_limit = "output_limit"
    runtime_error = "runtime_error"
    compile_error = "compile_error"
    checker_error = "checker_error"
    skipped = "skipped"
    error = "error"


class CaseResult(StageResult):
    """One test case: a run stage's result, its verdict and the checker's message."""

    name: str | None = None
    verdict: Verdict
    message: str = Field(default="", description="The custom checker's stdout, or why the "
                         "built-in checker refused the output")

    @classmethod
    def skipped_case(cls, name: str | None, verdict: Verdict = Verdict.skipped) -> CaseResult:
        return cls(status=StageStatus.skipped, name=name, verdict=verdict)


class Judgement(BaseModel):
    """A submission's test cases in sum."""

    verdict: Verdict = Field(description="accepted when every case was; else the first "
                             "case's that was not (compile_error when none ran)")
    passed: int = Field(ge=0)
    total: int = Field(ge=0)
    counts: dict[Verdict, int]
    wall_time_ms: int = Field(ge=0, description="Sum over the cases")
    cpu_time_ms: int = Field(ge=0, description="Sum over the cases")
    max_wall_time_ms: int = Field(ge=0)
    max_cpu_time_ms: int = Field(ge=0)
    max_memory_kib: int = Field(ge=0)

    @classmethod
    def of(cls, cases: list[CaseResult], compile_failed: bool) -> Judgement:
        counts: dict[Verdict, int] = {}
        for case in cases:
            counts[case.verdict] = counts.get(case.verdict, 0) + 1
        failing = next((c.verdict for c in cases if c.verdict is not Verdict.accepted), None)
        verdict = Verdict.compile_error if compile_failed else failing or Verdict.accepted
        return cls(verdict=verdict, passed=counts.get(Verdict.accepted, 0), total=len(cases),
                   counts=counts,
                   wall_time_ms=sum(c.wall_time_ms for c in cases),
                   cpu_time_ms=sum(c.cpu_time_ms for c in cases),
                   max_wall_time_ms=max((c.wall_time_ms for c in cases), default=0),
                   max_cpu_time_ms=max((c.cpu_time_ms for c in cases), default=0),
                   max_memory_kib=max((c.memory_kib for c in cases), default=0))


# A catalog environment's name (settings' `environments`): also a file name in
# the spool, so never a path.
CATALOG_NAME_PATTERN = r"^[a-z0-9][a-z0-9._+-]{0,99}$"
CATALOG_NAME = re.compile(CATALOG_NAME_PATTERN)
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


def output_chars_max(output_kib: int, *, base64: bool = False) -> int:
    """The most characters stdout or stderr of a stage capped at `output_kib`
    holds: as text every byte the stage wrote is at most one character, and
    nixjail's note comes on top; as base64 those bytes take a third more."""
    chars = output_kib * 1024 + NOTE_CHARS
    return base64_chars(chars) if base64 else chars


def base64_chars(size: int) -> int:
    return 4 * -(-size // 3)


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
    case_limits: list[ResolvedLimits] | None = Field(
        default=None, description="With tests: each case's limits, the run stage's with "
        "the case's own laid over them")
    tests: list[CaseResult | None] | None = Field(
        default=None, description="With tests: each case's result, in the request's order "
        "(null until it ran); the run stage then stays null")
    judgement: Judgement | None = Field(default=None,
                                        description="With tests, once it ended")

    @classmethod
    def new(cls, request: SubmissionRequest, limits: ResolvedStageLimits, *,
            owner: str | None = None, built: Environment | None = None) -> Submission:
        """A queued submission; `built` is its environment when the same
        shell.nix was built shortly before, so it starts with its run job."""
        now = utcnow()
        case_limits = None if request.tests is None else [
            limits.run.model_copy(update=case.limits.model_dump(exclude_none=True))
            for case in request.tests]
        submission = cls(id=new_submission_id(), status=SubmissionStatus.queued,
                         created_at=now, updated_at=now, request=request, limits=limits,
                         owner=owner, case_limits=case_limits,
                         tests=None if request.tests is None else [None] * len(request.tests))
        if built is not None:
            submission.environment = built
            submission.stages.dependencies = StageResult.built_before(built)
            submission.stages.dependencies.started_at = now
            submission.stages.dependencies.finished_at = now
        return submission

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
        if stage == "run" and self.tests is not None:
            raise InvalidInput("stage", "a submission with tests reports cases, not the "
                               "run stage")
        _check_output(result, getattr(self.limits, stage).output_kib, f"the {stage} stage")
        self._ensure_open()
        setattr(self.stages, stage, _stamped(result))

    def record_case(self, index: int, result: CaseResult) -> None:
        """A test case's result, as soon as it is known."""
        if self.tests is None or self.case_limits is None:
            raise InvalidInput("case", "this submission has no tests")
        if not 0 <= index < len(self.tests):
            raise InvalidInput("case", f"no case {index}: it has {len(self.tests)}")
        _check_output(result, self.case_limits[index].output_kib, f"case {index}")
        self._ensure_open()
        self.tests[index] = _stamped(result)

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
        elif self.stages.compile is None and self.stages.run is None and not any(
                self.tests or []):
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
            if getattr(self.stages, stage) is None and not (stage == "run" and self.tests):
                setattr(self.stages, stage, StageResult.skipped())
        if self.tests is not None and self.request.tests is not None:
            compile_failed = self.stages.compile is not None and self.stages.compile.status \
                not in (StageStatus.ok, StageStatus.skipped)
            unran = Verdict.compile_error if compile_failed else Verdict.skipped
            self.tests = [case or CaseResult.skipped_case(asked.name, unran)
                          for case, asked in zip(self.tests, self.request.tests, strict=True)]
            self.judgement = Judgement.of([c for c in self.tests if c is not None],
                                          compile_failed)

    def outcome(self) -> tuple[SubmissionStatus, str | None]:
        """How its stages say it ended, and the reason when that is `error`:
        error when nixjail itself failed in a stage, failed when the environment
        or the compile step failed, done when run ran, whatever its exit code."""
        ran: list[tuple[str, StageResult | None]] = [
            (stage, getattr(self.stages, stage)) for stage in STAGES]
        ran += [(f"case {index}", case) for index, case in enumerate(self.tests or [])]
        for what, result in ran:
            if result is not None and result.status is StageStatus.error:
                text = result.stderr if result.stderr_encoding is FileEncoding.utf8 else ""
                detail = text.strip().splitlines()[-1:] or ["no detail given"]
                name = what if what.startswith("case") else f"the {what} stage"
                return SubmissionStatus.error, f"{name} failed: {detail[0]}"
        deps, comp = self.stages.dependencies, self.stages.compile
        if deps is not None and deps.status not in (StageStatus.ok, StageStatus.skipped):
            return SubmissionStatus.failed, None
        if comp is not None and comp.status not in (StageStatus.ok, StageStatus.skipped):
            return SubmissionStatus.failed, None
        if self.stages.run is not None and self.stages.run.status is not StageStatus.skipped:
            return SubmissionStatus.done, None
        if any(case is not None and case.status is not StageStatus.skipped
               for case in self.tests or []):
            return SubmissionStatus.done, None
        return SubmissionStatus.error, ("no test case ran" if self.tests is not None
                                        else "the run stage never ran")


def _check_output(result: StageResult, output_kib: int, what: str) -> None:
    for name in ("stdout", "stderr"):
        chars = len(getattr(result, name))
        base64 = getattr(result, f"{name}_encoding") == "base64"
        most = output_chars_max(output_kib, base64=base64)
        if chars > most:
            raise InvalidInput(
                f"result.{name}", f"{chars} characters is more than {what}'s output_kib of "
                f"{output_kib} lets it hold ({most}{' in base64' if base64 else ''}, "
                "nixjail's own note included)")


def _stamped(result: StageResult) -> StageResult:
    # A worker that gives no times gets the time it reported at; a start
    # then follows from the stage's wall time. A stage that never ran has none.
    if result.status is StageStatus.skipped:
        return result
    if result.finished_at is None:
        result.finished_at = utcnow()
    if result.started_at is None:
        result.started_at = result.finished_at - timedelta(milliseconds=result.wall_time_ms)
    return result


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
    started_at: datetime | None = None
    finished_at: datetime | None = None


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
    judgement: Judgement | None = None

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
                   owner=submission.owner, stages=stages, judgement=submission.judgement)


class SubmissionPage(BaseModel):
    """One page of `GET /v1/submissions`, newest first; `next_cursor` fetches the next."""

    items: list[SubmissionSummary]
    next_cursor: str | None = None


class Accepted(BaseModel):
    id: str
    status: SubmissionStatus
    url: str


class CatalogEntry(BaseModel):
    """One environment of the operator's catalog, as submitters see it.

    `shell_nix` is the operator's text (no secret: it is what the name stands
    for, and clients may want to reproduce the environment themselves)."""

    name: str = Field(description="What a submission's `environment` says")
    version: str
    description: str
    aliases: list[str] = Field(description="Other names a submission may use for it")
    main_file: str = Field(description="The name a lone source file takes")
    compile_sh: str | None = Field(description="The compile script a submission gets "
                                   "when it gives none")
    run_sh: str = Field(description="The run script a submission gets when it gives none")
    shell_nix: str = Field(description="The shell.nix the name stands for")
    built: bool = Field(description="Whether the cache builder has built the entry's "
                        "current shell.nix: its first submission is then cached")
    built_at: datetime | None = Field(
        default=None, description="When it was built (absent while not built)")


class EnvironmentList(BaseModel):
    environments: list[CatalogEntry]
