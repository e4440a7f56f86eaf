"""The public registration API: ``register(fixed, moving, method="ecc", **options)``.

``fixed`` is the thermal image and ``moving`` the visible one (numpy arrays, any dtype, grey or
colour). The result's ``flow`` is a backward flow in pixels on the fixed grid (see
:mod:`ums.align.flow`); ``warp`` brings any image on the moving grid onto the fixed grid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from ums.align.ecc import DEFAULT_MOTION, RegistrationFailure, ecc_register
from ums.align.flow import flow_from_transform, warp_with_flow


# below this share of forward-backward consistent pixels the refiner is not trusted on a frame
MIN_CONSISTENT = 0.5


@dataclass
class Registration:
    # (H, W, 2) float32, fixed pixel -> offset to sample in moving; a global model's is built from
    # ``transform`` when first asked for: align keeps only the transform (2 ms a frame saved)
    dense_flow: np.ndarray | None
    score: float  # 0..1 confidence
    transform: np.ndarray | None = None  # 3x3 fixed -> moving when the model is global
    method: str = "ecc"
    details: dict[str, Any] = field(default_factory=dict)
    shape: tuple[int, int] | None = None  # (H, W) of the fixed grid, for a flow built from the transform

    @property
    def flow(self) -> np.ndarray:
        if self.dense_flow is None:
            self.dense_flow = flow_from_transform(self.transform, *self.shape)
        return self.dense_flow

    def warp(self, image: np.ndarray, border_value: float = 0) -> np.ndarray:
        """``image`` (on the moving grid) resampled onto the fixed grid."""
        if self.transform is not None and not self.transform[2, :2].any():
            h, w = self.shape or self.flow.shape[:2]
            return cv2.warpAffine(image, self.transform[:2], (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=border_value)
        return warp_with_flow(image, self.flow, border_value)

    @property
    def translation(self) -> tuple[float, float] | None:
        if self.transform is None:
            return None
        return float(self.transform[0, 2]), float(self.transform[1, 2])


def _global(method: str, transform_2x3: np.ndarray, score: float, shape: tuple[int, int], **details) -> Registration:
    transform = np.vstack([transform_2x3, [0, 0, 1]]).astype(np.float64)
    return Registration(None, score, transform, method, details, shape=tuple(shape))


def _identity(fixed: np.ndarray, moving: np.ndarray, **_: Any) -> Registration:
    return _global("identity", np.eye(2, 3), 0.0, fixed.shape[:2])


def _ecc(fixed: np.ndarray, moving: np.ndarray, motion: str = DEFAULT_MOTION, levels: int = 3,
         initial: np.ndarray | None = None, moving_mask: np.ndarray | None = None, **options: Any) -> Registration:
    init = None if initial is None else np.asarray(initial, np.float32)[:2]
    transform, score, converged = ecc_register(fixed, moving, motion, levels, initial=init,
                                               moving_mask=moving_mask, **options)
    return _global("ecc", transform, score, fixed.shape[:2], motion=motion, converged=converged)


def _learned(fixed: np.ndarray, moving: np.ndarray, weights: str | None = None, device: str = "cpu",
             min_consistent: float = MIN_CONSISTENT, **options: Any) -> Registration:
    """The cascade: ECC, then the residual refiner at ``weights`` (the shipped one when None)."""
    from ums.align.learned.inference import cached_model

    return refine(fixed, moving, _ecc(fixed, moving, **options), cached_model(weights, device), min_consistent)


def refine(fixed: np.ndarray, moving: np.ndarray, global_fit: Registration, model,
           min_consistent: float = MIN_CONSISTENT) -> Registration:
    """The learned cascade's second step: the refiner's residual r on the globally aligned pair,
    composed as x -> T(x + r(x)). A zero residual gives ``global_fit`` back exactly; a frame where
    fewer than ``min_consistent`` of the pixels are forward-backward consistent keeps it, saying why."""
    from ums.align.learned.inference import residual_flow

    covered = global_fit.warp(np.full(fixed.shape[:2], 255, np.uint8)) == 255
    residual = residual_flow(model, fixed, global_fit.warp(moving), covered)
    details = {**global_fit.details, "global_transform": global_fit.transform.tolist(),
               "consistent": round(residual.consistent, 4), "residual_px": round(residual.magnitude_px, 4)}
    if residual.consistent < min_consistent:
        details["refinement"] = (f"refiner not trusted: {residual.consistent:.0%} of the pixels forward-backward "
                                 f"consistent (< {min_consistent:.0%}); ECC's global fit kept")
        return Registration(global_fit.flow, global_fit.score, global_fit.transform, "learned", details)
    if not residual.flow.any():
        details["refinement"] = "no residual: ECC's global fit kept"
        return Registration(global_fit.flow, global_fit.score, global_fit.transform, "learned", details)
    # T(x + r) - x = (T(x) - x) + L r, L the linear part of the affine T
    linear = global_fit.transform[:2, :2].astype(np.float32)
    flow = global_fit.flow + residual.flow @ linear.T
    details["refinement"] = (f"refined: mean residual {residual.magnitude_px:.2f} px, "
                             f"{residual.consistent:.0%} of the pixels consistent")
    # ECC's correlation stays the frame's score: the residual moves pixels by a few px at most, and
    # scoring the dense flow again would cost as much as the refiner's heads (~25 ms)
    return Registration(flow, global_fit.score, None, "learned", details)


METHODS: dict[str, Callable[..., Registration]] = {"ecc": _ecc, "identity": _identity, "learned": _learned}


def register(fixed: np.ndarray, moving: np.ndarray, method: str = "ecc", **options: Any) -> Registration:
    """Register ``moving`` (visible) onto ``fixed`` (thermal); both on roughly the same grid.

    Raises RegistrationFailure when the pair cannot be registered (featureless image, size
    mismatch) and ValueError for an unknown method.
    """
    if method not in METHODS:
        raise ValueError(f"unknown registration method {method!r}; choose from {sorted(METHODS)}")
    if fixed.shape[:2] != moving.shape[:2]:
        raise RegistrationFailure(f"size mismatch: fixed {fixed.shape[:2]} vs moving {moving.shape[:2]} "
                                  "(run `ums crop` first to put both on the thermal grid)")
    return METHODS[method](fixed, moving, **options)
