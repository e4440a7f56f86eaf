"""Seeded synthetic deformation fields in pixels: a global similarity/affine part and a smooth
elastic part. The registration benchmark warps aligned pairs with them, and the learned net
trains on them (registration.md §5.3-5.4)."""

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
        # white noise blurred by sigma >= 30 px has nothing finer than ~sigma: draw it on a grid
        # 8x coarser and upsample, ~60x cheaper than blurring at full size
        sigma = rng.uniform(*ranges.elastic_sigma_px)
        small = (max(2, w // 8), max(2, h // 8))
        noise = rng.standard_normal((small[1], small[0], 2)).astype(np.float32)
        coarse = np.stack([cv2.GaussianBlur(noise[..., k], (0, 0), sigma / 8) for k in range(2)], -1)
        elastic = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR)
        elastic *= rng.uniform(0, ranges.elastic_px) / max(float(np.abs(elastic).max()), 1e-9)
        flow += elastic
    return flow
