"""Running a trained dense matcher on one pair of numpy images."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import torch

from ums.align.learned.checkpoint import load_matcher
from ums.align.learned.model import DenseMatcher, pad_to_multiple


@lru_cache(maxsize=2)
def _cached_matcher(weights: str, modified_ns: int, device: str) -> DenseMatcher:
    return load_matcher(weights, device)


def cached_matcher(weights, device: str) -> DenseMatcher:
    """One load per checkpoint file and version (a retrained file at the same path is reloaded)."""
    path = Path(weights) if weights is not None else None
    if path is None or not path.is_file():
        return load_matcher(path, device)  # raises the error that names --weights
    return _cached_matcher(str(path), path.stat().st_mtime_ns, device)


def to_tensor(image: np.ndarray, device: str) -> torch.Tensor:
    """(1, 3, H, W) float in [0, 1], RGB; grey and 16-bit inputs are stretched and replicated."""
    if image.dtype == np.uint16 or image.max() > 255:
        low, high = np.percentile(image, (1, 99))
        image = np.clip((image.astype(np.float32) - low) * (255.0 / max(high - low, 1e-6)), 0, 255)
    image = image.astype(np.float32) / 255.0
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    else:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].to(device)


@torch.no_grad()
def matcher_flow(model: DenseMatcher, fixed: np.ndarray, moving: np.ndarray) -> np.ndarray:
    """``model``'s (H, W, 2) pixel flow on the fixed grid that registers ``moving`` onto ``fixed``."""
    device = next(model.parameters()).device
    thermal, (h, w) = pad_to_multiple(to_tensor(fixed, device))
    visible, _ = pad_to_multiple(to_tensor(moving, device))
    flow = model(thermal, visible)[0, :, :h, :w]
    return flow.permute(1, 2, 0).cpu().numpy().astype(np.float32)


def predict_flow(fixed: np.ndarray, moving: np.ndarray, weights, device: str = "cpu") -> np.ndarray:
    """The flow of the checkpoint at ``weights`` (loaded once per file version)."""
    return matcher_flow(cached_matcher(weights, device), fixed, moving)
