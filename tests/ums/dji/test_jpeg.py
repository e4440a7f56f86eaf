from __future__ import annotations

import io

import cv2
import numpy as np
import pytest

from ums.dji.jpeg import APP1, APP3, JpegError, encode_segment, insert_segments, read_declared_size, read_header, split_payload


def small_jpeg(width=64, height=48) -> bytes:
    image = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", image)[1].tobytes()


def test_header_reads_size_and_inserted_segments():
    data = insert_segments(small_jpeg(), [(APP1, b"Exif\x00\x00abc"), (APP3, b"\x01\x02")])
    header = read_header(data)
    assert (header.width, header.height, header.components) == (64, 48, 3)
    assert header.payloads(APP1) == [b"Exif\x00\x00abc"]
    assert header.payloads(APP3) == [b"\x01\x02"]
    assert not header.truncated and header.image_end == len(data)


def test_data_after_the_image_is_not_truncation():
    data = small_jpeg() + b"\xff\xd8 appended preview without an end"
    assert not read_header(data).truncated


def test_missing_end_of_image_is_truncation():
    data = small_jpeg()
    header = read_header(data[: len(data) - 40])
    assert header.truncated and header.width == 64


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "no SOI"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 32, "no SOI"),
        (b"\xff\xd8\xff\xe1\x10\x00Exif", "runs past the end"),
        (b"\xff\xd8\xff\xe1\x00\x01", "invalid length"),
        (b"\xff\xd8\xff\xe1\x00\x04ab\xff\xda\x00\x08", "no frame header"),
        (b"\xff\xd8\x00\x00\x00\x00", "expected a marker"),
    ],
)
def test_malformed_headers_are_named(data, message):
    with pytest.raises(JpegError, match=message):
        read_header(data)


def test_segment_payload_limit_and_split():
    with pytest.raises(ValueError, match="65533"):
        encode_segment(APP3, b"x" * 65534)
    chunks = split_payload(b"y" * 200_000)
    assert b"".join(chunks) == b"y" * 200_000 and max(map(len, chunks)) <= 65533


def test_the_declared_size_is_read_by_seeking_past_segments():
    raw_block = [(APP3, b"\x00" * 65000)] * 10  # an R-JPEG's raw thermal block before the frame header
    data = insert_segments(small_jpeg(64, 48), [(APP1, b"Exif\x00\x00abc"), *raw_block])
    data = data[:2] + b"\xff\xff" + data[2:]  # a fill byte before a marker
    file = io.BytesIO(data)
    assert read_declared_size(file) == (64, 48)
    assert file.tell() < 700_000 + 100  # stopped at the frame header
    with pytest.raises(JpegError, match="no frame header"):
        read_declared_size(io.BytesIO(b"\xff\xd8\xff\xe1\x00\x04ab\xff\xda\x00\x08"))
    with pytest.raises(JpegError, match="no SOI"):
        read_declared_size(io.BytesIO(b"\x89PNG\r\n\x1a\n"))
    with pytest.raises(JpegError, match="truncated"):
        read_declared_size(io.BytesIO(data[:1000]))


def test_coded_bytes_bound_the_pixels_only_when_they_can():
    data = small_jpeg(64, 48)
    header = read_header(data)
    assert header.coded_bytes == len(data) - header.scan_offset
    assert read_header(data[:-40]).coded_bytes is None  # truncated
