"""What init returns beside a stage's stdout and stderr: its own notes, and the
output files a submission asked for.

Standard library only: this runs in container init.
"""

from __future__ import annotations

import base64
import fnmatch
import os
import stat
from pathlib import Path

from protocol import StageResult

MAX_OUTPUT_FILES = 256


def add_note(result: StageResult, note: str) -> None:
    """Append nixjail's own line to the stage's stderr, in the stderr's encoding."""
    line = f"\n{note}\n".encode()
    if result.stderr_encoding == "base64":
        result.stderr = base64.b64encode(base64.b64decode(result.stderr) + line).decode()
    else:
        result.stderr += line.decode()


def _matches(relative: str, patterns: list[str]) -> bool:
    # Component by component, so that `*` never crosses a `/`.
    parts = relative.split("/")
    for pattern in patterns:
        wanted = pattern.split("/")
        if len(wanted) == len(parts) and all(
                fnmatch.fnmatchcase(part, want) for part, want in zip(parts, wanted, strict=True)):
            return True
    return False


def collect_output_files(work_dir: Path, patterns: list[str],
                         max_bytes: int) -> tuple[dict[str, dict[str, str]], list[str]]:
    """The regular files under `work_dir` that match a pattern, base64-encoded, in name
    order, while their bytes fit in `max_bytes` together; and the names left out.

    Nothing is followed: a symlink (to a file or a directory) is never read, and a
    FIFO or device never opened, so a run cannot make init read outside its work dir.
    """
    depth = max(pattern.count("/") for pattern in patterns) + 1
    found: list[str] = []
    for directory, dirs, files in os.walk(work_dir):
        here = Path(directory).relative_to(work_dir)
        if len(here.parts) + 1 >= depth:
            dirs.clear()
        for name in files:
            relative = str(here / name) if here.parts else name
            if _matches(relative, patterns):
                found.append(relative)
        if len(found) > MAX_OUTPUT_FILES:
            break
    files: dict[str, dict[str, str]] = {}
    left_out: list[str] = []
    room = max_bytes
    for relative in sorted(found):
        if len(files) >= MAX_OUTPUT_FILES:
            left_out.append(relative)
            continue
        try:
            fd = os.open(work_dir / relative, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue  # a symlink, or gone
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                continue
            if info.st_size > room:
                left_out.append(relative)
                continue
            data = handle.read(room + 1)
        if len(data) > room:
            left_out.append(relative)
            continue
        room -= len(data)
        files[relative] = {"content": base64.b64encode(data).decode(), "encoding": "base64"}
    return files, left_out
