"""PNG encoding and decoding with libdeflate, for the images every capture writes (raw thermal
counts, the cropped thermal image, the aligned visible image) and the stages after it read.

OpenCV's PNG writer spends nearly all its time in zlib's deflate: ~11 ms for a 640x512 colour
image at level 1 even with Huffman-only coding, ~7 ms for 16-bit thermal counts. libdeflate's
level 1 does the same work in 0.36-0.45x the time and, on the colour images, gives smaller files
(bench/RESULTS.md, "PNG encoding"). libpng-based encoders (imagecodecs, spng) are no faster at any
setting: the cost is the deflate, not the container. So the container is written here, with one
filter ("up", which on these images compresses within a few per cent of an adaptive choice) and one
IDAT chunk; any PNG decoder reads it, and it holds exactly the pixels it was given.

Reading is the same story the other way: OpenCV's reader spends its time in zlib's inflate and
libpng's per-row calls. :func:`decode_png` reads the plain PNGs ums writes (and any other PNG whose
rows are all filtered "none" or "up") with libdeflate and one vector addition per row, checking
every chunk's CRC and the data's Adler-32 as libpng does: 2.2 ms instead of 4.1 for the raw counts,
1.5 instead of 2.3 for the cropped thermal image (bench/RESULTS.md, "PNG decoding"). Anything else
(palettes, transparency chunks, interlacing, the other filters) is left to OpenCV.
"""

from __future__ import annotations

import struct
import zlib

import cv2
import deflate
import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
FILTER_NONE, FILTER_UP = 0, 2
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


# Chunks that change nothing OpenCV gives back: text, resolution, time, colour-space notes (OpenCV
# applies no gamma or ICC profile). Any other chunk sends the file to OpenCV.
PIXEL_NEUTRAL_CHUNKS = {b"tEXt", b"zTXt", b"iTXt", b"pHYs", b"tIME", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"eXIf"}
CHANNELS = {colour_type: channels for channels, colour_type in COLOUR_TYPES.items()}


def decode_png(data: bytes, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray | None:
    """The pixels ``cv2.imdecode(data, flags)`` gives for a plain PNG (8 or 16-bit grey, RGB or RGBA,
    not interlaced, every row filtered "none" or "up"), or None for any other file, a damaged one
    included: the caller then asks OpenCV, which says what is wrong. ``flags``: IMREAD_UNCHANGED,
    or IMREAD_GRAYSCALE / IMREAD_COLOR where the file already is 8-bit grey / colour."""
    chunks = _chunks(data)
    if chunks is None or len(chunks.get(b"IHDR", ())) != 1:
        return None
    width, height, depth, colour_type, compression, filtering, interlace = struct.unpack(">IIBBBBB", chunks[b"IHDR"][0])
    channels = CHANNELS.get(colour_type)
    if channels is None or depth not in (8, 16) or (compression, filtering, interlace) != (0, 0, 0) or 0 in (width, height):
        return None
    if not _wanted_as_stored(flags, channels, depth):
        return None
    row_bytes = width * channels * depth // 8
    size = height * (row_bytes + 1)
    try:
        raw = deflate.zlib_decompress(b"".join(chunks[b"IDAT"]), size)
    except deflate.DeflateError:  # damaged, or longer than the header declares
        return None
    if len(raw) != size:  # shorter than the header declares
        return None
    rows = np.frombuffer(raw, np.uint8).reshape(height, row_bytes + 1)
    pixels = _unfiltered(rows)
    if pixels is None:
        return None
    if depth == 16:
        pixels = pixels.view(">u2").astype(np.uint16)  # PNG samples are big-endian
    image = pixels.reshape(height, width, channels) if channels > 1 else pixels.reshape(height, width)
    if channels in TO_RGB:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR if channels == 3 else cv2.COLOR_RGBA2BGRA)
    return image


def _chunks(data: bytes) -> dict[bytes, list[bytes]] | None:
    """Chunk type -> payloads, up to IEND; None unless every chunk is whole, its CRC right, and of a kind
    :func:`decode_png` handles."""
    view = memoryview(data)
    if bytes(view[:8]) != SIGNATURE:
        return None
    chunks: dict[bytes, list[bytes]] = {b"IDAT": []}
    position = 8
    while position + 12 <= len(view):
        length, kind = struct.unpack_from(">I4s", view, position)
        end = position + 12 + length
        if end > len(view):
            return None
        body = view[position + 4:end - 4]  # the type and the payload: what the CRC covers
        if deflate.crc32(body) != struct.unpack_from(">I", view, end - 4)[0]:
            return None
        if kind == b"IEND":
            return chunks if chunks[b"IDAT"] else None
        if kind in (b"IHDR", b"IDAT"):
            chunks.setdefault(kind, []).append(body[4:])
        elif kind not in PIXEL_NEUTRAL_CHUNKS:
            return None
        position = end
    return None  # no IEND: cut short


def _wanted_as_stored(flags: int, channels: int, depth: int) -> bool:
    """Whether OpenCV would hand the file's pixels back unconverted under ``flags``."""
    if flags == cv2.IMREAD_UNCHANGED:
        return True
    if flags == cv2.IMREAD_GRAYSCALE:
        return channels == 1 and depth == 8
    return flags == cv2.IMREAD_COLOR and channels == 3 and depth == 8


def _unfiltered(rows: np.ndarray) -> np.ndarray | None:
    """The filtered rows (filter-type byte first) undone, when every filter is "none" or "up"."""
    kinds = rows[:, 0]
    if not np.isin(kinds, (FILTER_NONE, FILTER_UP)).all():
        return None
    filtered = rows[:, 1:]
    pixels = np.empty_like(filtered)
    previous = np.zeros(filtered.shape[1], np.uint8)
    for index, kind in enumerate(kinds.tolist()):
        if kind == FILTER_UP:  # uint8 arithmetic wraps, as the filter's does
            np.add(previous, filtered[index], out=pixels[index])
        else:
            pixels[index] = filtered[index]
        previous = pixels[index]
    return pixels
