"""File stamps: what a stage wrote (size, modification time, SHA-256), so that a rerun can tell an
intact output from a truncated or altered one without trusting that a path merely exists.

A stamp is checked the way rsync and git check a file: the size must match; when the modification
time matches too the file is taken as written; when only the time differs (a copy, a restore from
backup) the content hash decides. Reading every output again on every rerun would cost as much as
the stage itself on a season of flights.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pydantic import BaseModel, ConfigDict

_CHUNK = 1 << 20


class FileStamp(BaseModel):
    model_config = ConfigDict(frozen=True)

    size: int
    mtime_ns: int
    sha256: str


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def stamp(path: Path) -> FileStamp:
    """The stamp of a file as it is now (raises OSError when it cannot be read)."""
    status = path.stat()
    return FileStamp(size=status.st_size, mtime_ns=status.st_mtime_ns, sha256=file_sha256(path))


def stamps(root: Path, relative_paths: dict[str, str]) -> dict[str, FileStamp]:
    """Stamps of a result's files, keyed by their path relative to ``root``."""
    return {relative: stamp(root / relative) for relative in sorted(set(relative_paths.values()))}


def damage(path: Path, expected: FileStamp) -> str | None:
    """What is wrong with ``path`` against its stamp (None: intact)."""
    try:
        status = path.stat()
    except FileNotFoundError:
        return "is missing"
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if status.st_size != expected.size:
        return f"has {status.st_size:,} bytes where {expected.size:,} were written (truncated or replaced)"
    if status.st_mtime_ns == expected.mtime_ns:
        return None
    try:
        intact = file_sha256(path) == expected.sha256
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    return None if intact else "has other content than was written (modified since)"


def first_damage(root: Path, expected: dict[str, FileStamp | dict]) -> tuple[str, str] | None:
    """The first (relative path, what is wrong) among stamped files, or None when all are intact."""
    for relative, stamp_ in sorted(expected.items()):
        problem = damage(root / relative, FileStamp.model_validate(stamp_))
        if problem:
            return relative, problem
    return None
