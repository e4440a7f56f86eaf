from __future__ import annotations

from tests.ums.dji.conftest import with_raw_block
import cv2
import numpy as np
import pytest

from tests.conftest import shared_data
from ums.dji.jpeg import read_header
from ums.dji.rjpeg import (RawThermalError, count_percentiles, extract_raw_thermal, has_flir_container, has_raw_thermal,
                           stretch_to_uint8)
from ums.dji.writer import encode_dji_jpeg


def test_raw_block_round_trips_exactly():
    counts = np.random.default_rng(1).integers(0, 65535, (512, 640), dtype=np.uint16)
    image = np.zeros((512, 640, 3), np.uint8)
    header = read_header(encode_dji_jpeg(image, b"Exif\x00\x00", {}, counts))
    raw = extract_raw_thermal(header)
    assert raw.marker == "APP3" and raw.shape == (512, 640)
    np.testing.assert_array_equal(raw.counts, counts)


def test_uhr_rendering_keeps_the_640x512_raw_block():
    counts = np.full((512, 640), 19000, np.uint16)
    header = read_header(encode_dji_jpeg(np.zeros((1024, 1280, 3), np.uint8), b"Exif\x00\x00", {}, counts))
    assert extract_raw_thermal(header).shape == (512, 640)


def test_no_raw_block():
    header = read_header(encode_dji_jpeg(np.zeros((512, 640, 3), np.uint8), b"Exif\x00\x00", {}))
    assert extract_raw_thermal(header) is None and not has_raw_thermal(header)


@pytest.mark.parametrize(
    "relative, shape, marker",
    [
        ("tsdk_v1.4_dataset/M30T/DJI_0001_R.JPG", (512, 640), "APP3"),  # 1280x1024 UHR rendering
        ("tsdk_v1.4_dataset/M30T/DJI_0011_R.JPG", (512, 640), "APP3"),
        ("tsdk_newer_via_thermal_parser/H30T/DJI_0001_R.JPG", (1024, 1280), "APP3"),
        ("tsdk_v1.4_dataset/XTS/DJI_0005_R.JPG", (512, 640), "APP4"),
        ("tsdk_v1.4_dataset/M3T/DJI_0001_R.JPG", (512, 640), "APP3"),
    ],
)
def test_real_raw_blocks_match_their_preview(relative, shape, marker):
    data = shared_data("dji", *relative.split("/")).read_bytes()
    raw = extract_raw_thermal(read_header(data))
    assert raw.shape == shape and raw.marker == marker
    preview = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    resized = cv2.resize(raw.counts.astype(np.float32), preview.shape[::-1])
    # WhiteHot previews are a monotonic rendering of the counts: strongly correlated.
    assert np.corrcoef(resized.ravel(), preview.ravel())[0, 1] > 0.75


def test_flir_container_has_no_dji_raw_block():
    header = read_header(shared_data("dji", "tsdk_newer_via_thermal_parser", "XT2", "DJI_XT2.jpg").read_bytes())
    assert extract_raw_thermal(header) is None and has_flir_container(header)


def test_stretch_uses_robust_percentiles():
    counts = np.tile(np.arange(1000, 2000, dtype=np.uint16), (10, 1))
    counts[0, 0] = 65535  # one hot pixel must not flatten the rest
    stretched = stretch_to_uint8(counts)
    assert stretched.dtype == np.uint8 and stretched.min() == 0 and stretched.max() == 255
    assert 100 < stretched[5, 500] < 155
    assert not stretch_to_uint8(np.full((4, 4), 7, np.uint16)).any()


@pytest.mark.parametrize("seed", range(6))
def test_count_percentiles_are_numpys_to_the_last_bit(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(1, 300, 2))
    counts = (rng.integers(0, 60000) + rng.normal(0, rng.integers(1, 4000), shape)).clip(0, 65535).astype(np.uint16)
    if seed == 0:
        counts[...] = rng.integers(0, 3, shape)  # ties everywhere
    percents = (0.0, 1.0, 37.3, 99.0, 100.0)
    assert count_percentiles(counts, percents) == list(np.percentile(counts, percents))
    assert count_percentiles(np.array([5, 9], np.uint16), (50.0,)) == [7.0]




def test_a_raw_block_smaller_than_its_frame_is_refused_naming_both_sizes():
    # 320x256 counts keep the 5:4 aspect of a 640x512 frame, but no DJI camera writes that layout
    jpeg = encode_dji_jpeg(np.zeros((512, 640, 3), np.uint8), b"Exif\x00\x00", {}, np.ones((256, 320), np.uint16))
    header = read_header(jpeg)
    with pytest.raises(RawThermalError, match=r"APP3 raw block holds 163840 bytes \(320x256\); "
                                              r"a 640x512 16-bit frame needs 655360"):
        extract_raw_thermal(header)
    assert not has_raw_thermal(header)


@pytest.mark.parametrize("delta", [-4, -1, 1, 6])
def test_a_raw_block_a_few_bytes_off_says_what_is_wrong(delta):
    raw = np.ones((512, 640), "<u2").tobytes()
    raw = raw[:delta] if delta < 0 else raw + b"\x00" * delta
    jpeg = encode_dji_jpeg(np.zeros((512, 640, 3), np.uint8), b"Exif\x00\x00", {})
    with pytest.raises(RawThermalError, match=f"APP3 raw block holds {655360 + delta} bytes; a 640x512 16-bit "
                                              "frame needs 655360"):
        extract_raw_thermal(read_header(with_raw_block(jpeg, raw)))


def test_a_uhr_frame_accepts_either_raw_layout_and_names_both_when_neither_fits():
    uhr = encode_dji_jpeg(np.zeros((1024, 1280, 3), np.uint8), b"Exif\x00\x00", {})
    full = np.arange(1024 * 1280, dtype="<u2").reshape(1024, 1280)
    assert extract_raw_thermal(read_header(with_raw_block(uhr, full.tobytes()))).shape == (1024, 1280)
    assert extract_raw_thermal(read_header(with_raw_block(uhr, full[::2, ::2].tobytes()))).shape == (512, 640)
    with pytest.raises(RawThermalError, match="a 1280x1024 16-bit frame needs 2621440 bytes, or 655360 for 640x512"):
        extract_raw_thermal(read_header(with_raw_block(uhr, full[::4, ::4].tobytes())))


def test_small_app_blocks_are_not_raw_attempts():
    # the XT S keeps 32 KB of other data in APP3 beside its APP4 raw block; DJI calibration APP4s are small
    jpeg = encode_dji_jpeg(np.zeros((512, 640, 3), np.uint8), b"Exif\x00\x00", {})
    assert extract_raw_thermal(read_header(with_raw_block(jpeg, b"\x01" * 32768))) is None
