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

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if data["cached"] is None:
            del data["cached"]
        return data


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
    stdin = raw.get("stdin") or ""
    if not isinstance(stdin, str):
        raise JobError("stdin must be a string")

    environment = _environment(raw.get("environment"))
    limits_raw = raw.get("limits")
    if not isinstance(limits_raw, dict):
        raise JobError("limits must be an object")
    needed = ["compile", "run"] + (["dependencies"] if environment.kind == "build" else [])
    limits = {stage: _limits(limits_raw.get(stage), stage) for stage in needed}

    deadline_s = float(_number(raw.get("deadline_s", 600), "deadline_s", integer=False))
    handshake = raw.get("handshake", False)
    if not isinstance(handshake, bool):
        raise JobError("handshake must be true or false")

    return Job(
        files=files,
        compile_sh=compile_sh or None,
        run_sh=run_sh,
        stdin=stdin.encode(),
        limits=limits,
        environment=environment,
        deadline_s=deadline_s,
        handshake=handshake,
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
