"""The libdeflate PNG writer: any decoder gives back exactly the pixels, and the stages' images go through it."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from ums.core.atomic import write_image
from ums.core.png import encode_png, png_supported


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
