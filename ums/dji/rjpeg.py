"""Raw 16-bit sensor data inside DJI thermal R-JPEGs.

DJI stores the raw counts (little-endian uint16, row-major) across consecutive APP3 segments, 640x512
even when the visible rendering is a 1280x1024 "UHR" image (the H30T stores 1280x1024 raw). The
Zenmuse XT S keeps them in APP4 instead. FLIR-built cameras (XT2, XTR) use FLIR's FFF container in
APP1, which this module does not decode: those files fall back to the palette preview.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ums.dji.jpeg import APP1, APP3, APP4, JpegHeader

_RAW_MARKERS = (APP3, APP4)
_KNOWN_RAW_SHAPES = ((512, 640), (1024, 1280), (256, 320), (480, 640), (288, 384))


@dataclass(frozen=True)
class RawThermal:
    counts: np.ndarray  # (H, W) uint16
    marker: str  # which APP segments held it

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.counts.shape)  # type: ignore[return-value]


def extract_raw_thermal(header: JpegHeader) -> RawThermal | None:
    """Return the raw sensor counts, or None when the file carries no raw block."""
    for marker in _RAW_MARKERS:
        blob = b"".join(header.payloads(marker))
        shape = _raw_shape(len(blob), header.width, header.height)
        if shape is not None:
            counts = np.frombuffer(blob, dtype="<u2").reshape(shape)
            return RawThermal(counts.astype(np.uint16, copy=True), f"APP{marker - 0xE0}")
    return None


def has_raw_thermal(header: JpegHeader) -> bool:
    """Whether a raw block is present, without copying it."""
    return any(
        _raw_shape(sum(len(p) for p in header.payloads(marker)), header.width, header.height)
        for marker in _RAW_MARKERS
    )


def has_flir_container(header: JpegHeader) -> bool:
    return any(payload.startswith(b"FLIR\x00") for payload in header.payloads(APP1))


def _raw_shape(n_bytes: int, image_width: int, image_height: int) -> tuple[int, int] | None:
    if n_bytes < 2 * 160 * 120 or n_bytes % 2:
        return None
    n_pixels = n_bytes // 2
    if n_pixels == image_width * image_height:
        return image_height, image_width
    # The raw block may be smaller than the rendering (UHR), but it keeps its aspect ratio.
    height = round(math.sqrt(n_pixels * image_height / image_width))
    if height and n_pixels % height == 0:
        width = n_pixels // height
        if abs(width / height - image_width / image_height) < 1e-3:
            return height, width
    for shape in _KNOWN_RAW_SHAPES:
        if shape[0] * shape[1] == n_pixels:
            return shape
    return None


def stretch_to_uint8(counts: np.ndarray, low_pct: float = 1.0, high_pct: float = 99.0) -> np.ndarray:
    """Robust percentile stretch of raw counts to 8 bits (the default IR channel for later stages)."""
    low, high = np.percentile(counts, (low_pct, high_pct))
    if high <= low:
        return np.zeros(counts.shape, np.uint8)
    scaled = (counts.astype(np.float32) - low) * (255.0 / (high - low))
    return np.clip(scaled, 0, 255).astype(np.uint8)
