"""JPEG marker-segment reading and writing.

DJI files keep everything the pipeline needs before the first scan: EXIF and XMP in APP1, the raw
thermal block in APP3 (APP4 on the XT S), calibration in APP4/APP5. Walking the segment headers
reads a few hundred kilobytes at most and never decodes pixels, which is what makes ingest fast.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

SOI = b"\xff\xd8"
EOI = b"\xff\xd9"
APP1, APP3, APP4, SOF0, SOF2, SOS = 0xE1, 0xE3, 0xE4, 0xC0, 0xC2, 0xDA
_START_OF_FRAME = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_ARITHMETIC_CODED = {0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_STANDALONE = {0x01, *range(0xD0, 0xD8)}


class JpegError(ValueError):
    """The bytes are not a well-formed JPEG up to its first scan."""


@dataclass(frozen=True)
class Segment:
    marker: int
    offset: int  # of the 0xFF marker byte in the file
    payload: bytes

    @property
    def name(self) -> str:
        if 0xE0 <= self.marker <= 0xEF:
            return f"APP{self.marker - 0xE0}"
        return f"0x{self.marker:02X}"


@dataclass(frozen=True)
class JpegHeader:
    """Every segment before the first scan, the frame size and where the main image ends."""

    segments: tuple[Segment, ...]
    width: int
    height: int
    components: int
    scan_offset: int
    image_end: int | None  # offset just past the last EOI after the scan; None when truncated
    frame_marker: int = SOF0

    @property
    def truncated(self) -> bool:
        return self.image_end is None

    @property
    def coded_bytes(self) -> int | None:
        """Bytes from the first scan to the end of the image, when they bound how many pixels the data
        can hold: Huffman coding spends at least one bit on every 8x8 block. None for a truncated file
        (its data is short by definition) and for arithmetic coding (no such floor)."""
        if self.image_end is None or self.frame_marker in _ARITHMETIC_CODED:
            return None
        return self.image_end - self.scan_offset

    def payloads(self, marker: int) -> list[bytes]:
        return [s.payload for s in self.segments if s.marker == marker]


def read_header(data: bytes) -> JpegHeader:
    """Read the segments up to the first scan and find the EOI that closes the main image.

    Raises JpegError naming what is wrong: not a JPEG, a segment running past the end of the
    data (truncation inside the header), or no frame header. A file whose image data stops before
    its EOI is returned with ``truncated`` set: its metadata is still good.
    """
    if not data.startswith(SOI):
        raise JpegError("not a JPEG file (no SOI marker)")
    size = len(data)
    segments: list[Segment] = []
    width = height = components = 0
    frame_marker = SOF0
    offset = 2
    while True:
        if offset + 4 > size:
            raise JpegError(f"file ends inside the header at byte {offset} (truncated)")
        if data[offset] != 0xFF:
            raise JpegError(f"expected a marker at byte {offset}, found 0x{data[offset]:02X}")
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte before a marker
            offset += 1
            continue
        if marker in _STANDALONE:
            offset += 2
            continue
        (length,) = struct.unpack_from(">H", data, offset + 2)
        if length < 2:
            raise JpegError(f"segment 0x{marker:02X} at byte {offset} has invalid length {length}")
        if marker == SOS:
            break
        end = offset + 2 + length
        if end > size:
            raise JpegError(
                f"segment 0x{marker:02X} at byte {offset} runs past the end of the file (truncated)"
            )
        payload = data[offset + 4 : end]
        segments.append(Segment(marker, offset, payload))
        if marker in _START_OF_FRAME and len(payload) >= 6:
            height, width = struct.unpack_from(">HH", payload, 1)
            components = payload[5]
            frame_marker = marker
        offset = end
    if width == 0 or height == 0:
        raise JpegError("no frame header (SOF) before the image data")
    # Entropy-coded data escapes 0xFF as 0xFF00, so no FFD9 occurs inside a scan: an EOI anywhere
    # after the scan start means the main image was written to its end (a cut file loses its
    # appended preview too). Searching backwards finds it at once in the usual case, a file that
    # ends with EOI, instead of scanning megabytes of image data.
    eoi = data.rfind(EOI, offset)
    image_end = None if eoi < 0 else eoi + 2
    return JpegHeader(tuple(segments), width, height, components, offset, image_end, frame_marker)


def read_declared_size(file: BinaryIO) -> tuple[int, int]:
    """The (width, height) a JPEG file's frame header declares, found by seeking from one segment
    header to the next: a few reads of a few bytes, however large the segments before it.

    Raises JpegError when the file is not a JPEG or has no frame header before its first scan."""
    if file.read(2) != SOI:
        raise JpegError("not a JPEG file (no SOI marker)")
    while True:
        head = file.read(4)
        if len(head) < 4:
            raise JpegError("file ends inside the header (truncated)")
        if head[0] != 0xFF:
            raise JpegError(f"expected a marker, found 0x{head[0]:02X}")
        marker = head[1]
        if marker == 0xFF:  # a fill byte before a marker
            file.seek(-3, 1)
            continue
        if marker in _STANDALONE:
            file.seek(-2, 1)
            continue
        (length,) = struct.unpack_from(">H", head, 2)
        if marker == SOS or length < 2:
            raise JpegError("no frame header (SOF) before the image data")
        if marker in _START_OF_FRAME:
            frame = file.read(5)
            if len(frame) < 5:
                raise JpegError("file ends inside the frame header (truncated)")
            height, width = struct.unpack_from(">HH", frame, 1)
            return width, height
        file.seek(length - 2, 1)


def insert_segments(jpeg: bytes, segments: list[tuple[int, bytes]]) -> bytes:
    """Insert APPn segments right after SOI and any leading APP0 (JFIF) segment.

    Payloads over 65533 bytes must be split by the caller: one segment's length field is 16 bits.
    """
    if not jpeg.startswith(SOI):
        raise JpegError("not a JPEG stream")
    insert_at = 2
    if jpeg[2:4] == b"\xff\xe0":
        (app0_length,) = struct.unpack(">H", jpeg[4:6])
        insert_at = 4 + app0_length
    encoded = b"".join(encode_segment(marker, payload) for marker, payload in segments)
    return jpeg[:insert_at] + encoded + jpeg[insert_at:]


def encode_segment(marker: int, payload: bytes) -> bytes:
    if len(payload) > 65533:
        raise ValueError(f"segment payload of {len(payload)} bytes exceeds the 65533-byte limit")
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload


def split_payload(data: bytes, chunk: int = 65530) -> list[bytes]:
    return [data[i : i + chunk] for i in range(0, len(data), chunk)] or [b""]
