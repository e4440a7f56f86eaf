"""Classical local refinement after ECC, for bench/registration.py --tiles: a check of
how far local evidence between the modalities goes on the benchmark's pairs, beside the learned
cascade. Not part of the package.

ECC similarity aligns the pair globally; the ECC-aligned visible image is then cut into square
tiles at half-tile stride, each tile's shift is measured on a cross-modal representation, the
shifts of the confident tiles are spread over the frame by a Gaussian (normalised convolution) and
composed with ECC's fit, as the cascade composes its residual.

  ecc   translation ECC per tile (cv2.findTransformECC) on ECC's gradient-magnitude maps
  ncc   normalised cross-correlation per tile (cv2.matchTemplate) over +-4 px on the gradient
        magnitude and its doubled-angle orientation (cos 2t, sin 2t: blind to contrast polarity),
        each divided by its local mean magnitude
"""

from __future__ import annotations

import cv2
import numpy as np

from ums.align.ecc import gradient_representation
from ums.align.registration import Registration, register

SEARCH_PX = 4  # the ncc matcher's reach per tile


def tile_refined(fixed: np.ndarray, moving: np.ndarray, moving_mask: np.ndarray | None = None,
                 matcher: str = "ncc", tile: int = 48, sigma: float = 20.0) -> Registration:
    global_fit = register(fixed, moving, moving_mask=moving_mask)
    covered = global_fit.warp(np.full(fixed.shape[:2], 255, np.uint8) if moving_mask is None else moving_mask) > 250
    aligned = global_fit.warp(moving)
    represent = gradient_representation if matcher == "ecc" else _magnitude_and_orientation
    measure = _ecc_shift if matcher == "ecc" else _ncc_shift
    fixed_rep, moving_rep = represent(fixed), represent(aligned)
    evidence = np.zeros(fixed.shape[:2] + (3,), np.float32)  # weighted shift x, y and weight at tile centres
    margin = SEARCH_PX if matcher == "ncc" else 0
    height, width = fixed.shape[:2]
    for y in range(margin, height - tile - margin + 1, tile // 2):
        for x in range(margin, width - tile - margin + 1, tile // 2):
            if covered[y - margin:y + tile + margin, x - margin:x + tile + margin].mean() < 0.98:
                continue
            found = measure(fixed_rep, moving_rep, x, y, tile)
            if found is not None:
                (dx, dy), weight = found
                evidence[y + tile // 2, x + tile // 2] += (dx * weight, dy * weight, weight)
    spread = cv2.GaussianBlur(evidence, (0, 0), sigma)
    residual = spread[..., :2] / np.maximum(spread[..., 2:], 1e-9)
    residual[spread[..., 2] < 1e-9] = 0
    linear = global_fit.transform[:2, :2].astype(np.float32)
    return Registration(global_fit.flow + residual @ linear.T, global_fit.score, None, f"tiles-{matcher}",
                        {**global_fit.details, "refinement": "refined"})


def _ecc_shift(fixed_rep, moving_rep, x, y, tile):
    template, image = fixed_rep[y:y + tile, x:x + tile], moving_rep[y:y + tile, x:x + tile]
    if template.std() < 1e-3 or image.std() < 1e-3:
        return None
    try:
        correlation, warp = cv2.findTransformECC(template, image, np.eye(2, 3, dtype=np.float32), cv2.MOTION_TRANSLATION,
                                                 (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-4), None, 1)
    except cv2.error:  # did not converge
        return None
    shift = warp[:, 2]
    if correlation < 0.2 or np.hypot(*shift) > 6:
        return None
    return (float(shift[0]), float(shift[1])), float(correlation)


def _ncc_shift(fixed_rep, moving_rep, x, y, tile):
    template = np.ascontiguousarray(fixed_rep[y:y + tile, x:x + tile])
    if template.std() < 1e-4:
        return None
    window = np.ascontiguousarray(moving_rep[y - SEARCH_PX:y + tile + SEARCH_PX, x - SEARCH_PX:x + tile + SEARCH_PX])
    scores = cv2.matchTemplate(window, template, cv2.TM_CCOEFF_NORMED)
    row, column = np.unravel_index(np.argmax(scores), scores.shape)
    if not (0 < row < scores.shape[0] - 1 and 0 < column < scores.shape[1] - 1) or scores[row, column] < 0.2:
        return None  # no peak inside the reach
    dx = column + _parabola_peak(*scores[row, column - 1:column + 2]) - SEARCH_PX
    dy = row + _parabola_peak(*scores[row - 1:row + 2, column]) - SEARCH_PX
    return (float(dx), float(dy)), float(scores[row, column]) ** 2


def _parabola_peak(left: float, centre: float, right: float) -> float:
    curvature = left - 2 * centre + right
    return 0.0 if curvature >= 0 else 0.5 * (left - right) / curvature


def _magnitude_and_orientation(image: np.ndarray) -> np.ndarray:
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    grey = cv2.GaussianBlur(grey.astype(np.float32), (0, 0), 1.5)
    gx, gy = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    magnitude = np.sqrt(gx * gx + gy * gy)
    local = cv2.GaussianBlur(magnitude, (0, 0), 8) + 1e-3 * magnitude.max() + 1e-6
    along = magnitude + 1e-6
    return np.dstack([magnitude / local, (gx * gx - gy * gy) / along / local, 2 * gx * gy / along / local])
