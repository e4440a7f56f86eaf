"""Helpers the tests of this folder share."""

from __future__ import annotations

import cv2
import numpy as np
from tests.conftest import shared_data
from ums.align.flow import flow_from_transform


def real_pair(dataset: str, name: str):
    root = shared_data(dataset)
    ir = cv2.imread(str(root / "ir" / name), cv2.IMREAD_GRAYSCALE)
    vi = cv2.imread(str(root / "vi" / name), cv2.IMREAD_COLOR)
    return ir, vi


def similarity_flow(degrees: float, scale: float, shift: tuple[float, float], h: int, w: int) -> np.ndarray:
    c, s = scale * np.cos(np.radians(degrees)), scale * np.sin(np.radians(degrees))
    cx, cy = (w - 1) / 2, (h - 1) / 2
    return flow_from_transform(np.array([[c, -s, cx - c * cx + s * cy + shift[0]], [s, c, cy - s * cx - c * cy + shift[1]],
                                         [0, 0, 1.0]]), h, w)


def at_offset(array: np.ndarray, offset: int) -> np.ndarray:
    """A copy of ``array`` at ``offset`` bytes past a 64-byte boundary: process pools and Dask workers
    hold the same image at other addresses, and the bits of a result must not care."""
    raw = np.empty(array.nbytes + 128, np.uint8)
    start = -raw.ctypes.data % 64 + offset
    copy = raw[start:start + array.nbytes].view(array.dtype).reshape(array.shape)
    copy[...] = array
    return copy
