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

from ums.align.ecc import RegistrationFailure, ecc_register, gradient_representation
from ums.align.flow import flow_from_transform, valid_mask, warp_with_flow


@dataclass
class Registration:
    flow: np.ndarray  # (H, W, 2) float32, fixed pixel -> offset to sample in moving
    score: float  # 0..1 confidence
    transform: np.ndarray | None = None  # 3x3 fixed -> moving when the model is global
    method: str = "ecc"
    details: dict[str, Any] = field(default_factory=dict)

    def warp(self, image: np.ndarray, border_value: float = 0) -> np.ndarray:
        """``image`` (on the moving grid) resampled onto the fixed grid."""
        if self.transform is not None and not self.transform[2, :2].any():
            h, w = self.flow.shape[:2]
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
    return Registration(flow_from_transform(transform, *shape), score, transform, method, details)


def _identity(fixed: np.ndarray, moving: np.ndarray, **_: Any) -> Registration:
    return _global("identity", np.eye(2, 3), 0.0, fixed.shape[:2])


def _ecc(fixed: np.ndarray, moving: np.ndarray, motion: str = "translation", levels: int = 3,
         initial: np.ndarray | None = None, moving_mask: np.ndarray | None = None, **options: Any) -> Registration:
    init = None if initial is None else np.asarray(initial, np.float32)[:2]
    transform, score, converged = ecc_register(fixed, moving, motion, levels, initial=init,
                                               moving_mask=moving_mask, **options)
    return _global("ecc", transform, score, fixed.shape[:2], motion=motion, converged=converged)


def _learned(fixed: np.ndarray, moving: np.ndarray, weights: str | None = None, device: str = "cpu",
             **_: Any) -> Registration:
    from ums.align.learned.inference import predict_flow

    flow = predict_flow(fixed, moving, weights, device)
    return Registration(flow, flow_confidence(fixed, moving, flow), None, "learned", {"weights": str(weights)})


def flow_confidence(fixed: np.ndarray, moving: np.ndarray, flow: np.ndarray) -> float:
    """The score ECC reports, for any flow: correlation of the gradient maps after warping."""
    fixed_rep = gradient_representation(fixed)
    warped = warp_with_flow(gradient_representation(moving), flow)
    inside = valid_mask(flow, moving.shape[:2])
    if inside.sum() < 64:
        return 0.0
    return float(max(cv2.computeECC(fixed_rep, warped, inside.astype(np.uint8)), 0.0))


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
