"""Seeded synthetic deformation fields in pixels: a global similarity/affine part and a smooth
elastic part. The registration benchmark warps aligned pairs with them, and the learned net
trains on them (docs/reference/registration.md §5.3-5.4)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ums.align.flow import flow_from_transform


@dataclass(frozen=True)
class FieldRange:
    """Uniform ranges (+-) of each part of a field."""

    rotation_deg: float = 2.0
    scale: float = 0.03
    shear: float = 0.0
    translation_px: float = 20.0
    elastic_px: float = 1.5  # the elastic part's largest displacement
    elastic_sigma_px: tuple[float, float] = (40.0, 40.0)


DRONE = FieldRange()  # the benchmark's drone-like residual regime
TRAIN_DRONE = FieldRange(rotation_deg=2.0, scale=0.03, shear=0.01, translation_px=16.0, elastic_px=2.0,
                         elastic_sigma_px=(30.0, 80.0))
SUPERFUSION = FieldRange(rotation_deg=10.0, scale=0.0, shear=0.0, translation_px=15.0, elastic_px=4.0,
                         elastic_sigma_px=(40.0, 40.0))


def random_field(shape: tuple[int, int], rng: np.random.Generator, ranges: FieldRange = DRONE) -> np.ndarray:
    """An (H, W, 2) float32 backward flow: global part about the image centre plus elastic part."""
    h, w = shape
    angle = np.radians(rng.uniform(-ranges.rotation_deg, ranges.rotation_deg))
    scale = 1 + rng.uniform(-ranges.scale, ranges.scale)
    shear = rng.uniform(-ranges.shear, ranges.shear)
    tx, ty = rng.uniform(-ranges.translation_px, ranges.translation_px, 2)
    c, s = np.cos(angle), np.sin(angle)
    linear = np.array([[c, -s], [s, c]]) @ np.array([[scale, shear], [0, scale]])
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    offset = centre - linear @ centre + (tx, ty)
    flow = flow_from_transform(np.vstack([np.hstack([linear, offset[:, None]]), [0, 0, 1]]), h, w)
    if ranges.elastic_px > 0:
        elastic = _smooth_noise(shape, rng, rng.uniform(*ranges.elastic_sigma_px), factor=8)
        elastic *= rng.uniform(0, ranges.elastic_px) / max(float(np.abs(elastic).max()), 1e-9)
        flow += elastic
    return flow


def smooth_field(shape: tuple[int, int], rng: np.random.Generator, sigma_px: float, rms_px: float) -> np.ndarray:
    """An (H, W, 2) float32 field of Gaussian-smoothed noise (scale ``sigma_px``) whose displacement
    has root-mean-square length ``rms_px``."""
    field = _smooth_noise(shape, rng, sigma_px, factor=int(np.clip(sigma_px // 4, 1, 8)))
    rms = float(np.sqrt(np.mean(np.sum(field.astype(np.float64) ** 2, axis=-1))))
    return field * np.float32(rms_px / max(rms, 1e-9))


def _smooth_noise(shape: tuple[int, int], rng: np.random.Generator, sigma_px: float, factor: int) -> np.ndarray:
    # white noise blurred by sigma px has nothing finer than ~sigma: draw it on a grid ``factor``
    # times coarser (at most sigma/4 px per cell) and upsample, ~60x cheaper at 8x than at full size
    h, w = shape
    small = (max(2, w // factor), max(2, h // factor))
    noise = rng.standard_normal((small[1], small[0], 2)).astype(np.float32)
    coarse = np.stack([cv2.GaussianBlur(noise[..., k], (0, 0), sigma_px / factor) for k in range(2)], -1)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR)
