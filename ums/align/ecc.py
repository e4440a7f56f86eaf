"""Classical IR/visible registration: multi-scale ECC on gradient-magnitude images.

Raw intensities of the two modalities are not related by any affine map (polarity flips between
materials), but their edges coincide; ECC on smoothed, normalised gradient magnitudes is the one
classical method that held up on real pairs (registration.md §4). Low-order models only:
translation or Euclidean; affine and homography drifted on real pairs.
"""

from __future__ import annotations

import cv2
import numpy as np

MOTIONS = {"translation": cv2.MOTION_TRANSLATION, "euclidean": cv2.MOTION_EUCLIDEAN}


def gradient_representation(image: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """Gradient magnitude after Gaussian smoothing, divided by its 99th percentile, clipped to [0, 1]."""
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    grey = grey.astype(np.float32)
    if grey.max() > 255:  # 16-bit counts: bring to the same order as 8-bit images
        low, high = np.percentile(grey, (1, 99))
        grey = (grey - low) * (255.0 / max(high - low, 1e-6))
    smooth = cv2.GaussianBlur(grey, (0, 0), sigma)
    gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3)
    magnitude = cv2.magnitude(gx, gy)
    scale = np.percentile(magnitude, 99)
    if scale <= 1e-6:
        return np.zeros_like(magnitude)
    return np.clip(magnitude / scale, 0, 1)


def ecc_register(
    fixed: np.ndarray,
    moving: np.ndarray,
    motion: str = "translation",
    levels: int = 3,
    iterations: int = 100,
    epsilon: float = 1e-5,
    initial: np.ndarray | None = None,
    moving_mask: np.ndarray | None = None,
) -> tuple[np.ndarray, float, bool]:
    """Estimate the 2x3 transform mapping fixed pixels to moving pixels, coarse to fine.

    Returns (transform, correlation at the finest level, converged). A level that fails to
    converge keeps the previous level's estimate.
    """
    if motion not in MOTIONS:
        raise ValueError(f"motion must be one of {sorted(MOTIONS)}, not {motion!r}")
    fixed_rep = gradient_representation(fixed)
    moving_rep = gradient_representation(moving)
    if not fixed_rep.any() or not moving_rep.any():
        raise RegistrationFailure("an image has no structure (no gradients)")
    transform = np.eye(2, 3, dtype=np.float32) if initial is None else initial.astype(np.float32).copy()
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, iterations, epsilon)
    correlation, converged = 0.0, True
    for level in reversed(range(levels)):
        scale = 1.0 / (2**level)
        f = _downscale(fixed_rep, scale)
        m = _downscale(moving_rep, scale)
        mask = None if moving_mask is None else _downscale(moving_mask, scale, cv2.INTER_NEAREST)
        scaled = _scale_transform(transform, scale)
        try:
            correlation, scaled = cv2.findTransformECC(f, m, scaled, MOTIONS[motion], criteria, mask, 5)
            transform = _scale_transform(scaled, 1.0 / scale)
            converged = True
        except cv2.error:
            converged = False
    if not converged:
        correlation = _correlation(fixed_rep, moving_rep, transform)
    return transform, float(max(correlation, 0.0)), converged


class RegistrationFailure(RuntimeError):
    """The pair cannot be registered (no structure, no overlap, no convergence)."""


def _downscale(image: np.ndarray, scale: float, interpolation: int = cv2.INTER_AREA) -> np.ndarray:
    if scale == 1.0:
        return image
    size = (max(8, round(image.shape[1] * scale)), max(8, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=interpolation)


def _scale_transform(transform: np.ndarray, scale: float) -> np.ndarray:
    """The same motion expressed on an image resized by ``scale`` (pixel-centre convention)."""
    matrix = np.vstack([transform, [0, 0, 1]]).astype(np.float64)
    s = np.array([[scale, 0, 0.5 * scale - 0.5], [0, scale, 0.5 * scale - 0.5], [0, 0, 1]])
    return (s @ matrix @ np.linalg.inv(s))[:2].astype(np.float32)


def _correlation(fixed_rep: np.ndarray, moving_rep: np.ndarray, transform: np.ndarray) -> float:
    warped = cv2.warpAffine(moving_rep, transform, fixed_rep.shape[::-1], flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    return float(cv2.computeECC(fixed_rep, warped))
