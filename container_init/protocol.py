"""The job that container init reads and the JSON lines it writes.

Standard library only: this runs inside the runner image, which has nothing but python3.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import select
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath
from typing import Any

STAGES = ("dependencies", "compile", "run")
LIMIT_FIELDS = (
    "wall_time_s",
    "cpu_time_s",
    "memory_mib",
    "processes",
    "output_kib",
    "file_size_kib",
)


class JobError(ValueError):
    """The job on stdin is not what the protocol says."""


@dataclass(frozen=True)
class Limits:
    wall_time_s: float
    cpu_time_s: float
    memory_mib: int
    processes: int
    output_kib: int
    file_size_kib: int


@dataclass(frozen=True)
class Environment:
    """How the stages get their toolchain.

    kind "build": shell_nix is built in a private throwaway store (dependencies stage).
    kind "prebuilt": env_script is either an absolute /nix/store path of the script or
    the script's text.
    kind "none": plain bash from the image, no Nix (standalone use and tests).
    """

    kind: str
    shell_nix: str = ""
    nix_path: str = ""
    env_script: str = ""


CHECKER_KINDS = ("exact", "lines", "tokens", "float", "custom")


@dataclass(frozen=True)
class Checker:
    kind: str = "lines"
    abs_tol: float = 1e-6
    rel_tol: float = 1e-6
    check_sh: str | None = None


@dataclass(frozen=True)
class Case:
    """One test case: run.sh on a fresh copy of the compiled work dir."""

    name: str | None
    stdin: bytes
    args: list[str]
    files: dict[str, bytes]
    expected_output: bytes | None
    limits: Limits
    checker: Checker


@dataclass(frozen=True)
class Job:
    files: dict[str, bytes]
    compile_sh: str | None
    run_sh: str
    stdin: bytes
    limits: dict[str, Limits]
    environment: Environment
    deadline_s: float
    handshake: bool
    args: list[str] = field(default_factory=list)
    tests: list[Case] | None = None
    stop_on_failure: bool = False
    output_base64: bool = False
    output_files: list[str] = field(default_factory=list)
    max_output_file_bytes: int = 1 << 20


@dataclass
class StageResult:
    status: str
    exit_code: int | None = None
    signal: int | None = None
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    # The kept output holds bytes that are not printable text (jailkit.capture).
    stdout_binary: bool = False
    stderr_binary: bool = False
    wall_time_ms: int = 0
    cpu_time_ms: int = 0
    memory_kib: int = 0
    # Only the dependencies stage carries "cached"; None keeps it out of the JSON.
    cached: bool | None = field(default=None)
    stdout_encoding: str = "utf-8"
    stderr_encoding: str = "utf-8"
    started_at: str | None = None
    finished_at: str | None = None
    # Run stage and cases: the output files, as {name: {content, encoding: base64}}.
    files: dict[str, dict[str, str]] | None = None

    def to_json(self) -> dict[str, Any]:
        return {name: value for name, value in asdict(self).items()
                if value is not None or name in ("exit_code", "signal")}


@dataclass
class CaseResult(StageResult):
    name: str | None = None
    verdict: str = "skipped"
    message: str = ""


def skipped(stage: str) -> StageResult:
    return StageResult(status="skipped", cached=False if stage == "dependencies" else None)


def _number(value: Any, name: str, *, integer: bool) -> float:
    # bool is an int subclass; a limit of `true` is a client bug, not 1.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise JobError(f"{name} must be a number")
    if not math.isfinite(value) or value <= 0:
        raise JobError(f"{name} must be positive")
    if integer and value != int(value):
        raise JobError(f"{name} must be an integer")
    return value


def _limits(raw: Any, stage: str) -> Limits:
    if not isinstance(raw, dict):
        raise JobError(f"limits.{stage} must be an object")
    missing = [name for name in LIMIT_FIELDS if name not in raw]
    if missing:
        raise JobError(f"limits.{stage} lacks {', '.join(missing)}")
    values = {
        name: _number(raw[name], f"limits.{stage}.{name}", integer=not name.endswith("_s"))
        for name in LIMIT_FIELDS
    }
    return Limits(
        wall_time_s=float(values["wall_time_s"]),
        cpu_time_s=float(values["cpu_time_s"]),
        memory_mib=int(values["memory_mib"]),
        processes=int(values["processes"]),
        output_kib=int(values["output_kib"]),
        file_size_kib=int(values["file_size_kib"]),
    )


def _file_name(name: str) -> str:
    path = PurePosixPath(name)
    if not name or path.is_absolute() or any(part in ("", ".", "..") for part in name.split("/")):
        raise JobError(f"bad file name {name!r}: must be a relative path without . or ..")
    return str(path)


def _file_content(name: str, raw: Any) -> bytes:
    # The API also accepts a bare string for a UTF-8 file; take it here too.
    if isinstance(raw, str):
        return raw.encode()
    if not isinstance(raw, dict) or not isinstance(raw.get("content"), str):
        raise JobError(f"files[{name!r}] must be a string or {{content, encoding}}")
    encoding = raw.get("encoding", "utf-8")
    if encoding == "utf-8":
        return raw["content"].encode()
    if encoding == "base64":
        try:
            return base64.b64decode(raw["content"], validate=True)
        except binascii.Error as exc:
            raise JobError(f"files[{name!r}] is not valid base64: {exc}") from exc
    raise JobError(f"files[{name!r}] has unknown encoding {encoding!r}")


def _data(raw: Any, name: str) -> bytes:
    """Text (a string) or {content, encoding} bytes, as the API takes them."""
    if isinstance(raw, str):
        return raw.encode()
    return _file_content(name, raw)


def _strings(raw: Any, name: str) -> list[str]:
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise JobError(f"{name} must be a list of strings")
    if any("\x00" in item for item in raw):
        raise JobError(f"{name} must not contain NUL bytes")
    return list(raw)


def _checker(raw: Any, name: str) -> Checker:
    if raw is None:
        return Checker()
    if not isinstance(raw, dict) or raw.get("kind", "lines") not in CHECKER_KINDS:
        raise JobError(f"{name}.kind must be one of {', '.join(CHECKER_KINDS)}")
    kind = raw.get("kind", "lines")
    check_sh = raw.get("check_sh")
    if (kind == "custom") != isinstance(check_sh, str):
        raise JobError(f"{name}.check_sh is required with kind custom, and only with it")
    tolerances = {}
    for tol in ("abs_tol", "rel_tol"):
        value = raw.get(tol, 1e-6)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 \
                or not math.isfinite(value):
            raise JobError(f"{name}.{tol} must be a number of at least 0")
        tolerances[tol] = float(value)
    return Checker(kind=kind, check_sh=check_sh, **tolerances)


def _case(raw: Any, index: int) -> Case:
    name = f"tests[{index}]"
    if not isinstance(raw, dict):
        raise JobError(f"{name} must be an object")
    case_name = raw.get("name")
    if case_name is not None and not isinstance(case_name, str):
        raise JobError(f"{name}.name must be a string")
    files_raw = raw.get("files") or {}
    if not isinstance(files_raw, dict):
        raise JobError(f"{name}.files must be an object")
    expected = raw.get("expected_output")
    return Case(
        name=case_name,
        stdin=_data(raw.get("stdin") or "", f"{name}.stdin"),
        args=_strings(raw.get("args") or [], f"{name}.args"),
        files={_file_name(n): _file_content(n, v) for n, v in files_raw.items()},
        expected_output=None if expected is None else _data(expected,
                                                            f"{name}.expected_output"),
        limits=_limits(raw.get("limits"), name),
        checker=_checker(raw.get("checker"), f"{name}.checker"),
    )


def _environment(raw: Any) -> Environment:
    if raw is None:
        return Environment(kind="none")
    if not isinstance(raw, dict):
        raise JobError("environment must be an object")
    kind = raw.get("kind")
    if kind == "build":
        shell_nix = raw.get("shell_nix")
        if not isinstance(shell_nix, str) or not shell_nix.strip():
            raise JobError("environment.shell_nix must be a non-empty string")
        nix_path = raw.get("nix_path") or ""
        if not isinstance(nix_path, str):
            raise JobError("environment.nix_path must be a string")
        return Environment(kind="build", shell_nix=shell_nix, nix_path=nix_path)
    if kind == "prebuilt":
        script = raw.get("env_script")
        if not isinstance(script, str) or not script.strip():
            raise JobError("environment.env_script must be a non-empty string")
        return Environment(kind="prebuilt", env_script=script)
    if kind == "none":
        return Environment(kind="none")
    raise JobError(f"environment.kind must be build, prebuilt or none, not {kind!r}")


def parse_job(line: bytes) -> Job:
    """Parse and check the job line; raise JobError with a readable reason."""
    try:
        raw = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise JobError(f"job is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise JobError("job must be a JSON object")

    files_raw = raw.get("files") or {}
    if not isinstance(files_raw, dict):
        raise JobError("files must be an object")
    files = {_file_name(name): _file_content(name, value) for name, value in files_raw.items()}

    compile_sh = raw.get("compile_sh")
    if compile_sh is not None and not isinstance(compile_sh, str):
        raise JobError("compile_sh must be a string or null")
    run_sh = raw.get("run_sh")
    if not isinstance(run_sh, str):
        raise JobError("run_sh must be a string")
    stdin = _data(raw.get("stdin") or "", "stdin")

    environment = _environment(raw.get("environment"))
    limits_raw = raw.get("limits")
    if not isinstance(limits_raw, dict):
        raise JobError("limits must be an object")
    needed = ["compile", "run"] + (["dependencies"] if environment.kind == "build" else [])
    limits = {stage: _limits(limits_raw.get(stage), stage) for stage in needed}

    deadline_s = float(_number(raw.get("deadline_s", 600), "deadline_s", integer=False))
    flags = {}
    for flag in ("handshake", "stop_on_failure"):
        flags[flag] = raw.get(flag, False)
        if not isinstance(flags[flag], bool):
            raise JobError(f"{flag} must be true or false")
    tests_raw = raw.get("tests")
    if tests_raw is not None and not isinstance(tests_raw, list):
        raise JobError("tests must be a list or null")
    output_encoding = raw.get("output_encoding", "auto")
    if output_encoding not in ("auto", "base64"):
        raise JobError("output_encoding must be auto or base64")
    max_file_bytes = int(_number(raw.get("max_output_file_bytes", 1 << 20),
                                 "max_output_file_bytes", integer=True))

    return Job(
        files=files,
        compile_sh=compile_sh or None,
        run_sh=run_sh,
        stdin=stdin,
        limits=limits,
        environment=environment,
        deadline_s=deadline_s,
        handshake=flags["handshake"],
        args=_strings(raw.get("args") or [], "args"),
        tests=None if tests_raw is None else [_case(c, i) for i, c in enumerate(tests_raw)],
        stop_on_failure=flags["stop_on_failure"],
        output_base64=output_encoding == "base64",
        output_files=[_file_name(g) for g in _strings(raw.get("output_files") or [],
                                                      "output_files")],
        max_output_file_bytes=max_file_bytes,
    )


class Emitter:
    """Writes one JSON object per line to the protocol's stdout, unbuffered."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self.broken = False

    def emit(self, event: str, **fields: Any) -> None:
        if self.broken:
            return
        data = json.dumps({"event": event, **fields}, ensure_ascii=False).encode() + b"\n"
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
        except BrokenPipeError:
            # The reader is gone; keep going so the stage is still killed and reaped.
            self.broken = True


class LineReader:
    """Reads lines from a file descriptor with a timeout, waking on a second fd too.

    select() on a raw fd is needed here: a buffered readline() can neither time out nor be
    interrupted by the signal wake-up pipe.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = b""
        self.eof = False

    def _take_line(self) -> bytes | None:
        newline = self._buffer.find(b"\n")
        if newline < 0:
            return None
        line, self._buffer = self._buffer[:newline], self._buffer[newline + 1 :]
        return line

    def readline(self, timeout: float | None, wake_fd: int | None = None) -> bytes | None:
        """Return a line (without newline), b"" at EOF, or None on timeout or wake-up."""
        while True:
            line = self._take_line()
            if line is not None:
                return line
            if self.eof:
                rest, self._buffer = self._buffer, b""
                return rest
            watch = [self._fd] + ([wake_fd] if wake_fd is not None else [])
            ready, _, _ = select.select(watch, [], [], timeout)
            if self._fd not in ready:
                return None
            chunk = os.read(self._fd, 1 << 16)
            if not chunk:
                self.eof = True
            self._buffer += chunk
