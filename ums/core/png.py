"""PNG encoding with libdeflate, for the images every capture writes (raw thermal counts, the
cropped thermal image, the aligned visible image).

OpenCV's PNG writer spends nearly all its time in zlib's deflate: ~11 ms for a 640x512 colour
image at level 1 even with Huffman-only coding, ~7 ms for 16-bit thermal counts. libdeflate's
level 1 does the same work in 0.36-0.45x the time and, on the colour images, gives smaller files
(bench/RESULTS.md, "PNG encoding"). libpng-based encoders (imagecodecs, spng) are no faster at any
setting: the cost is the deflate, not the container. So the container is written here, with one
filter ("up", which on these images compresses within a few per cent of an adaptive choice) and one
IDAT chunk; any PNG decoder reads it, and it holds exactly the pixels it was given.
"""

from __future__ import annotations

import struct
import zlib

import cv2
import deflate
import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
FILTER_UP = 2
# PNG colour types by channel count: grey, (grey + alpha is not written), RGB, RGBA
COLOUR_TYPES = {1: 0, 3: 2, 4: 6}
TO_RGB = {3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGBA}
LEVEL = 1  # libdeflate's fastest: levels 2-4 cost 2-3x the time for 2-5 % smaller files here


def png_supported(image: np.ndarray) -> bool:
    """Whether :func:`encode_png` writes ``image`` (8 or 16-bit grey, BGR or BGRA, as OpenCV holds them)."""
    if image.ndim not in (2, 3) or image.dtype not in (np.uint8, np.uint16) or 0 in image.shape[:2]:
        return False
    return _channels(image) in COLOUR_TYPES


def encode_png(image: np.ndarray, level: int = LEVEL) -> bytes:
    """``image`` (OpenCV's channel order) as PNG bytes; :func:`cv2.imread` gives back the same array."""
    if not png_supported(image):
        raise ValueError(f"no PNG encoding for an image of shape {image.shape} and type {image.dtype}")
    channels = _channels(image)
    height, width = image.shape[:2]
    header = struct.pack(">IIBBBBB", width, height, image.dtype.itemsize * 8, COLOUR_TYPES[channels], 0, 0, 0)
    data = deflate.zlib_compress(_filtered_rows(image, channels), level)
    return SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def _channels(image: np.ndarray) -> int:
    return 1 if image.ndim == 2 else image.shape[2]


def _filtered_rows(image: np.ndarray, channels: int) -> np.ndarray:
    """Each row as its byte difference from the row above (the first from zeros), after a filter-type byte."""
    if channels in TO_RGB:
        image = cv2.cvtColor(image, TO_RGB[channels])
    if image.dtype == np.uint16:
        image = image.astype(">u2")  # PNG samples are big-endian
    rows = np.ascontiguousarray(image).view(np.uint8).reshape(image.shape[0], -1)
    filtered = np.empty((rows.shape[0], rows.shape[1] + 1), np.uint8)
    filtered[:, 0] = FILTER_UP
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])  # uint8 arithmetic wraps, as the filter's does
    return filtered


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(payload, zlib.crc32(kind)))
