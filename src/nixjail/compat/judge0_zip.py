"""Judge0's `additional_files`: a base64 zip whose files lie beside the source.

The zip is the client's, so nothing in it is trusted: names must be relative
paths nixjail takes (no `..`, no absolute path, no backslash), links,
encrypted entries and duplicate names are refused, and every entry is read
through a bounded reader, so a zip bomb (or a header that lies about sizes)
stops at the cap instead of filling memory.
"""

from __future__ import annotations

import base64
import binascii
import io
import stat
import zipfile

from nixjail.models import MAX_FILES, MAX_PATH_BYTES

FIELD = "additional_files"


class BadZip(ValueError):
    """Why `additional_files` is refused, in words for the client."""


def unzip(encoded: str, *, max_bytes: int, max_files: int = MAX_FILES - 1) -> dict[str, bytes]:
    """The files of a base64 zip by name, directories left out; BadZip when it
    is not one, names a path nixjail does not take, or holds more than
    `max_files` files or `max_bytes` bytes once extracted."""
    try:
        raw = base64.b64decode("".join(encoded.split()), validate=True)
    except (binascii.Error, ValueError):
        raise BadZip("is not valid base64 (a zip archive, base64-encoded)") from None
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw))
    except (zipfile.BadZipFile, ValueError, OSError):
        raise BadZip("is not a zip archive") from None
    files: dict[str, bytes] = {}
    total = 0
    with archive:
        for info in archive.infolist():
            name = info.filename
            if info.is_dir():
                continue
            _check_name(name)
            if info.flag_bits & 0x1:
                raise BadZip(f"{name!r} is encrypted")
            mode = info.external_attr >> 16
            if mode and not (stat.S_ISREG(mode) or stat.S_IFMT(mode) == 0):
                raise BadZip(f"{name!r} is not a regular file (links are refused)")
            if name in files:
                raise BadZip(f"{name!r} is in the archive twice")
            if len(files) >= max_files:
                raise BadZip(f"holds more than {max_files} files")
            left = max_bytes - total
            try:
                with archive.open(info) as member:
                    content = member.read(left + 1)
            except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError,
                    EOFError, ValueError) as exc:
                raise BadZip(f"{name!r} cannot be extracted: {exc}") from None
            if len(content) > left:
                raise BadZip(f"extracts to more than {max_bytes} bytes")
            total += len(content)
            files[name] = content
    return files


def _check_name(name: str) -> None:
    if not name or "\x00" in name:
        raise BadZip("holds a file without a name")
    if len(name.encode()) > MAX_PATH_BYTES:
        raise BadZip(f"{name[:40]!r}… is longer than {MAX_PATH_BYTES} bytes")
    if name.startswith("/") or "\\" in name:
        raise BadZip(f"{name!r} is not a relative path with '/' separators")
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise BadZip(f"{name!r} has an empty, '.' or '..' component")
