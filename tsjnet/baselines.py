"""Classical fusion rules that give every metric table a reference row. Each takes the IR and the
visible luma as float32 0..255 arrays of one size and returns the fused luma.

- ``mean``: (IR + Y) / 2.
- ``max``: the brighter source per pixel (TSJNet's intensity loss target).
- ``laplacian``: Burt & Adelson (1983) Laplacian-pyramid fusion: detail levels keep the coefficient
  of larger magnitude, the coarsest Gaussian level is averaged.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np


def fuse_mean(infrared: np.ndarray, visible: np.ndarray) -> np.ndarray:
    return (infrared + visible) / 2


def fuse_max(infrared: np.ndarray, visible: np.ndarray) -> np.ndarray:
    return np.maximum(infrared, visible)


def laplacian_pyramid(image: np.ndarray, levels: int) -> list[np.ndarray]:
    pyramid, current = [], image
    for _ in range(levels):
        smaller = cv2.pyrDown(current)
        pyramid.append(current - cv2.pyrUp(smaller, dstsize=current.shape[1::-1]))
        current = smaller
    pyramid.append(current)
    return pyramid


def collapse_pyramid(pyramid: list[np.ndarray]) -> np.ndarray:
    image = pyramid[-1]
    for detail in reversed(pyramid[:-1]):
        image = cv2.pyrUp(image, dstsize=detail.shape[1::-1]) + detail
    return image


def pyramid_levels(shape: tuple[int, ...], coarsest: int = 8, most: int = 5) -> int:
    """As many halvings as keep the coarsest level at least ``coarsest`` pixels on its short side."""
    levels, side = 0, min(shape[:2])
    while levels < most and side // 2 >= coarsest:
        side //= 2
        levels += 1
    return levels


def fuse_laplacian(infrared: np.ndarray, visible: np.ndarray, levels: int | None = None) -> np.ndarray:
    levels = pyramid_levels(infrared.shape) if levels is None else levels
    ir_pyramid, vi_pyramid = laplacian_pyramid(infrared, levels), laplacian_pyramid(visible, levels)
    details = [np.where(np.abs(a) >= np.abs(b), a, b) for a, b in zip(ir_pyramid[:-1], vi_pyramid[:-1])]
    base = (ir_pyramid[-1] + vi_pyramid[-1]) / 2
    return collapse_pyramid(details + [base])


BASELINES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "mean": fuse_mean, "max": fuse_max, "laplacian": fuse_laplacian,
}
