"""Crash-safe file writes: write to a temporary name in the same folder, fsync, then rename.

A process killed at any instant leaves either the old file, the new file, or a stray temporary
(``.<name>.<pid>.tmp``) that :func:`remove_stale_temporaries` deletes on the next start.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path

import cv2
import numpy as np

from ums.core.png import decode_png, encode_png, png_supported

TEMP_SUFFIX = ".tmp"


def temporary_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.{os.getpid()}{TEMP_SUFFIX}")


def write_bytes(target: Path, data: bytes, durable: bool = True) -> Path:
    """Write ``data`` under a temporary name, then rename it to ``target``.

    The rename alone protects against a killed process. ``durable`` adds an fsync before it, so the
    content also survives a power cut; files derived from sources that can be rebuilt skip it
    (it costs several milliseconds per file).
    """
    target = Path(target)
    temporary = temporary_path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temporary, target)
    except OSError as exc:
        _discard(temporary)  # on a full disk, a half-written temporary holds the very space a rerun needs
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise NoSpaceLeft(errno.ENOSPC, _no_space_message(target, len(data))) from exc
        raise
    return target


class NoSpaceLeft(OSError):
    """A full disk (or quota): the message names the file, the space it needed and the space left."""

    def __str__(self) -> str:
        return str(self.strerror)


def _no_space_message(target: Path, size: int) -> str:
    return (f"no space left on the disk for {target} (it needs {human_bytes(size)}; {human_bytes(free_bytes(target.parent))} "
            "free there): free space on that disk, then rerun the same command")


def human_bytes(count: float) -> str:
    """``0 B``, ``512 B``, ``1.5 KB``, ``64.0 MB``, ``2.1 GB``: sizes in messages."""
    if count < 1024:
        return f"{count:.0f} B"
    for unit in ("KB", "MB", "GB"):
        count /= 1024
        if count < 1024 or unit == "GB":
            break
    return f"{count:.1f} {unit}"


def free_bytes(folder: Path) -> int:
    """Free space on the disk holding ``folder`` (or its nearest existing parent); 0 when unknown."""
    for candidate in (folder, *folder.parents):  # the folder itself may not exist yet
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return 0


def _discard(temporary: Path) -> None:
    try:
        temporary.unlink(missing_ok=True)
    except OSError:
        pass  # the next writer's remove_stale_temporaries takes it


def write_text(target: Path, text: str) -> Path:
    return write_bytes(target, text.encode("utf-8"))


# OpenCV's settings for a PNG that ums.core.png does not write (other sample types): the "up" filter
# with Huffman-only deflate, as fast as OpenCV's default on 16-bit thermal frames and a little smaller.
# Stored (level 0) PNG is ~6x faster but 2.7x larger (bench/RESULTS.md); for a dataset the size matters more.
FAST_PNG = [
    cv2.IMWRITE_PNG_COMPRESSION, 1,
    cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP,
    cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY,
]
# The same with run-length deflate, for images with runs Huffman-only cannot see: a 640x512 validity
# mask is 1 KB in 0.7 ms instead of 41 KB in 3.3 ms; a 640x512 visible crop 342 KB in 11.0 ms
# instead of 400 KB in 11.6 ms (stored: 962 KB in 3.2 ms). On thermal counts it is no smaller and
# ~10 % slower (bench/RESULTS.md). Both are OpenCV's; images written without params go to ums.core.png.
RUNS_PNG = [
    cv2.IMWRITE_PNG_COMPRESSION, 1,
    cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP,
    cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE,
]
# For intermediate files that one later stage reads and replaces: no compression at all. A 640x512
# colour image is 0.3 ms as an uncompressed TIFF, 2.3 ms as a stored PNG (libpng still checksums
# and filters every row) and 11-16 ms deflated; it also decodes in 0.1 ms instead of 0.9
# (bench/RESULTS.md).
UNCOMPRESSED_TIFF = [cv2.IMWRITE_TIFF_COMPRESSION, 1]


def write_image(
    target: Path, image: np.ndarray, params: list[int] | None = None, durable: bool = True
) -> Path:
    """Encode (format from the suffix; PNG keeps uint16) and write atomically. A PNG without ``params``
    is written with libdeflate (:mod:`ums.core.png`); anything else with OpenCV and ``params``."""
    suffix = Path(target).suffix
    if params is None and suffix.lower() == ".png":
        if png_supported(image):
            return write_bytes(target, encode_png(image), durable)
        params = FAST_PNG
    ok, encoded = cv2.imencode(suffix, image, params or [])
    if not ok:
        raise ValueError(f"OpenCV could not encode an image of shape {image.shape} as {target}")
    return write_bytes(target, encoded.tobytes(), durable)


def read_image(path: Path, flags: int = cv2.IMREAD_COLOR) -> np.ndarray | None:
    """``cv2.imread(path, flags)``: the image, or None when the file is missing or does not decode.
    A plain PNG (every PNG :func:`write_image` writes) is decoded with libdeflate in ~0.6x the time."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        return cv2.imread(str(path), flags)
    try:
        data = path.read_bytes()
    except OSError:
        return None
    image = decode_png(data, flags)
    if image is None and data:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    return image


def remove_stale_temporaries(folder: Path, only_dead_writers: bool = False) -> list[Path]:
    """Delete temporaries left by killed writers under ``folder``; return what was removed.

    By default every ``.*.tmp`` counts, whoever wrote it: call it so only while holding the workspace's
    writer lock (:meth:`ums.core.workspace.Workspace.writing`), or a live writer's temporary would go too.
    ``only_dead_writers`` keeps those whose writing process (the pid in the name) still runs, for
    folders no lock covers, such as an export folder another workspace may be writing into."""
    removed = []
    for path in Path(folder).rglob(f".*{TEMP_SUFFIX}") if Path(folder).is_dir() else []:
        if path.is_file() and not (only_dead_writers and _writer_alive(path)):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


_TEMPORARY_NAME = re.compile(rf"^\..+\.(\d+){re.escape(TEMP_SUFFIX)}$")  # temporary_path's names


def _writer_alive(path: Path) -> bool:
    match = _TEMPORARY_NAME.match(path.name)
    if match is None:
        return True  # not ours: leave it
    pid = int(match.group(1))
    if pid == os.getpid():
        return False  # this process has not written it: an earlier process had our pid
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True

