"""The libdeflate PNG writer and reader: any decoder gives back exactly the pixels, the reader gives what
OpenCV gives or leaves the file to OpenCV, and the stages' images go through both."""

from __future__ import annotations

import io
import struct

import cv2
import deflate
import numpy as np
import pytest
from PIL import Image

from ums.core.atomic import read_image, write_image
from ums.core.png import SIGNATURE, _chunk, decode_png, encode_png, png_supported


def _images() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    smooth = cv2.GaussianBlur(rng.integers(0, 255, (37, 53), dtype=np.uint8), (7, 7), 2)
    return {
        "grey 8-bit": smooth,
        "grey 16-bit counts": (smooth.astype(np.uint16) * 257 + rng.integers(0, 300, smooth.shape)).astype(np.uint16),
        "BGR": rng.integers(0, 256, (29, 41, 3), dtype=np.uint8),
        "BGRA": rng.integers(0, 256, (8, 5, 4), dtype=np.uint8),
        "16-bit BGR": rng.integers(0, 65536, (6, 7, 3), dtype=np.uint16),
        "one row": rng.integers(0, 256, (1, 9), dtype=np.uint8),
        "one column": rng.integers(0, 256, (9, 1), dtype=np.uint8),
        "a view, not contiguous": rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)[::2, 3:25],
    }


@pytest.mark.parametrize("name", list(_images()))
def test_opencv_reads_back_the_same_pixels(name):
    image = _images()[name]
    decoded = cv2.imdecode(np.frombuffer(encode_png(image), np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded.dtype == image.dtype
    assert np.array_equal(decoded, image)


def test_another_decoder_reads_it_in_rgb_order():
    """PIL (libpng-free zlib path, RGB order): the file is standard PNG, not something only OpenCV reads."""
    bgr = _images()["BGR"]
    decoded = np.asarray(Image.open(io.BytesIO(encode_png(bgr))))
    assert np.array_equal(decoded, bgr[..., ::-1])
    counts = _images()["grey 16-bit counts"]
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_png(counts)))).astype(np.uint16), counts)


def test_same_bytes_every_time():
    image = _images()["BGR"]
    assert encode_png(image) == encode_png(image.copy())


def test_smooth_images_compress():
    """A smooth 8-bit image is far smaller than its raw pixels (the filter and the deflate both work)."""
    image = cv2.resize(_images()["grey 8-bit"], (640, 512), interpolation=cv2.INTER_CUBIC)
    assert len(encode_png(image)) < image.nbytes / 3


@pytest.mark.parametrize("image", [np.zeros((4, 4), np.float32), np.zeros((4, 4, 2), np.uint8),
                                   np.zeros((0, 4), np.uint8), np.zeros(4, np.uint8)])
def test_unsupported_images_are_refused(image):
    assert not png_supported(image)
    with pytest.raises(ValueError, match="no PNG encoding"):
        encode_png(image)


def test_write_image_uses_it_and_opencv_for_the_rest(tmp_path):
    image = _images()["grey 16-bit counts"]
    written = write_image(tmp_path / "counts.png", image)
    assert written.read_bytes() == encode_png(image)
    # explicit OpenCV settings still go to OpenCV (crop's run-length validity mask)
    mask = np.zeros((16, 16), np.uint8)
    explicit = write_image(tmp_path / "mask.png", mask, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    assert explicit.read_bytes() != encode_png(mask)
    assert np.array_equal(cv2.imread(str(explicit), cv2.IMREAD_UNCHANGED), mask)


# -- reading ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(_images()))
def test_decode_png_gives_opencvs_pixels(name):
    image = _images()[name]
    data = encode_png(image)
    decoded = decode_png(data)
    expected = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded is not None and decoded.dtype == expected.dtype and decoded.flags.writeable
    assert np.array_equal(decoded, expected)


def test_the_flags_that_ask_for_the_stored_pixels_use_it_and_the_rest_go_to_opencv(tmp_path):
    grey, colour, counts = (_images()[name] for name in ("grey 8-bit", "BGR", "grey 16-bit counts"))
    assert np.array_equal(decode_png(encode_png(grey), cv2.IMREAD_GRAYSCALE), grey)
    assert np.array_equal(decode_png(encode_png(colour), cv2.IMREAD_COLOR), colour)
    # a conversion is OpenCV's to make (its grey weights, its 16 to 8-bit rule)
    for image, flags in ((colour, cv2.IMREAD_GRAYSCALE), (grey, cv2.IMREAD_COLOR), (counts, cv2.IMREAD_GRAYSCALE),
                         (counts, cv2.IMREAD_COLOR), (grey, cv2.IMREAD_REDUCED_GRAYSCALE_2)):
        assert decode_png(encode_png(image), flags) is None
        path = write_image(tmp_path / "image.png", image)
        assert np.array_equal(read_image(path, flags), cv2.imread(str(path), flags))


def test_rows_mixing_none_and_up_are_read_and_other_filters_go_to_opencv(tmp_path):
    image = _images()["grey 8-bit"]
    rows = np.empty((image.shape[0], image.shape[1] + 1), np.uint8)
    rows[:, 0] = 0
    rows[:, 1:] = image
    rows[1::2, 0] = 2  # odd rows as their difference from the row above
    rows[1::2, 1:] = image[1::2] - image[0:-1:2]
    mixed = _png(image.shape, 8, 0, deflate.zlib_compress(rows.tobytes(), 6))
    assert np.array_equal(decode_png(mixed), image)
    # OpenCV's adaptive filtering picks sub, average and Paeth rows as well
    adaptive = cv2.imencode(".png", _images()["BGR"])[1].tobytes()
    assert decode_png(adaptive) is None
    path = tmp_path / "adaptive.png"
    path.write_bytes(adaptive)
    assert np.array_equal(read_image(path, cv2.IMREAD_UNCHANGED), _images()["BGR"])


def test_damaged_cut_or_unusual_files_are_left_to_opencv(tmp_path):
    data = bytearray(encode_png(_images()["BGR"]))
    idat = data.index(b"IDAT")
    flipped = bytearray(data)
    flipped[idat + 20] ^= 0xFF  # the chunk's CRC no longer matches
    assert decode_png(bytes(flipped)) is None
    assert decode_png(bytes(data[:-20])) is None  # no IEND
    assert decode_png(b"not a png at all") is None
    # a transparency chunk changes what OpenCV returns (an alpha channel): not ours to guess
    iend = data.rindex(b"IEND") - 4
    with_trns = bytes(data[:iend]) + _chunk(b"tRNS", b"\x00\x01\x00\x02\x00\x03") + bytes(data[iend:])
    assert decode_png(with_trns) is None
    # pixel-neutral metadata changes nothing
    with_text = bytes(data[:iend]) + _chunk(b"tEXt", b"Software\x00ums") + bytes(data[iend:])
    assert np.array_equal(decode_png(with_text), _images()["BGR"])
    # a data stream of the wrong length for the header: refused, not reshaped
    short = _png((4, 4), 8, 0, deflate.zlib_compress(bytes(4 * 5 - 1), 1))
    assert decode_png(short) is None
    for name, content in (("cut.png", bytes(data[: len(data) // 2])), ("empty.png", b"")):
        path = tmp_path / name
        path.write_bytes(content)
        assert read_image(path, cv2.IMREAD_UNCHANGED) is None
    assert read_image(tmp_path / "missing.png", cv2.IMREAD_UNCHANGED) is None


def test_read_image_reads_other_formats_with_opencv(tmp_path):
    image = _images()["BGR"]
    path = write_image(tmp_path / "image.tif", image, [cv2.IMWRITE_TIFF_COMPRESSION, 1])
    assert np.array_equal(read_image(path, cv2.IMREAD_COLOR), image)


def _png(shape: tuple[int, int], depth: int, colour_type: int, idat: bytes) -> bytes:
    header = struct.pack(">IIBBBBB", shape[1], shape[0], depth, colour_type, 0, 0, 0)
    return SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
