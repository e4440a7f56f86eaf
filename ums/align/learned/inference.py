"""Running the cascade's residual refiner (shipped with the package, or trained by ``ums align-train``)
on one pair of numpy images."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import torch

from ums.align.learned.blocks import pad_to_multiple
from ums.align.learned.checkpoint import load_refiner
from ums.align.learned.refiner import ResidualRefiner, consistency_error, network_inputs

# trained by `ums align-train` on public pairs; MODEL_CARD.md beside it says how
SHIPPED_REFINER = Path(__file__).resolve().parent / "weights" / "refiner.safetensors"


@lru_cache(maxsize=2)
def _cached_model(weights: str, modified_ns: int, device: str) -> ResidualRefiner:
    return load_refiner(weights, device)


def cached_model(weights, device: str) -> ResidualRefiner:
    """The refiner at ``weights`` (the shipped one when None), loaded once per file version: a
    retrained file at the same path is reloaded."""
    path = SHIPPED_REFINER if weights is None else Path(weights)
    if not path.is_file():
        if weights is None:
            raise FileNotFoundError(f"the shipped refiner weights are missing from the installation ({path}): "
                                    "reinstall ums, or pass --weights PATH")
        return load_refiner(path, device)  # raises the error that names --weights
    return _cached_model(str(path), path.stat().st_mtime_ns, device)


@dataclass
class Residual:
    flow: np.ndarray  # (H, W, 2) thermal -> ECC-aligned visible, gated by its consistency
    consistent: float  # share of the visible-covered pixels whose two directions agree
    magnitude_px: float  # mean length of the gated residual there (on every 4th pixel and row)


def _unit(image: np.ndarray) -> np.ndarray:
    """Float32 in [0, 1]: 8-bit values / 255, 16-bit counts stretched over their 1-99 % range."""
    if image.dtype == np.uint16 or image.max() > 255:
        low, high = np.percentile(image, (1, 99))
        return np.clip((image.astype(np.float32) - low) / max(high - low, 1e-6), 0, 1)
    return image.astype(np.float32) / 255


def _unit_grey(image: np.ndarray) -> np.ndarray:
    return _unit(image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))


def unit_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB in [0, 1]; a grey image replicated."""
    unit = _unit(image)
    return np.ascontiguousarray(np.repeat(unit[..., None], 3, axis=2) if unit.ndim == 2
                                else cv2.cvtColor(unit, cv2.COLOR_BGR2RGB))


@torch.no_grad()
def residual_flow(model: ResidualRefiner, fixed: np.ndarray, aligned: np.ndarray, covered: np.ndarray,
                  tolerance_px: float = 0.5, gate_sigma_px: float = 8.0) -> Residual:
    """The refiner's residual between ``fixed`` and the ECC-aligned visible image ``aligned``.

    Where forward and backward flows disagree by more than ``tolerance_px`` the net is guessing
    (no texture, occlusion, a moving object): the residual is faded to zero there, by a mask
    smoothed over ``gate_sigma_px`` so that the field stays smooth."""
    device = next(model.parameters()).device
    thermal_in, visible_in = network_inputs(_unit_grey(fixed), unit_rgb(aligned))
    thermal, (h, w) = pad_to_multiple(torch.from_numpy(thermal_in).permute(2, 0, 1)[None].to(device), 4)
    visible, _ = pad_to_multiple(torch.from_numpy(visible_in).permute(2, 0, 1)[None].to(device), 4)
    forward, backward = model(thermal, visible)
    error = consistency_error(forward, backward)[0, :h, :w].cpu().numpy()
    flow = forward[0, :, :h, :w].permute(1, 2, 0).cpu().numpy().astype(np.float32)
    agrees = (error < tolerance_px) & covered
    gate = cv2.GaussianBlur(agrees.astype(np.float32), (0, 0), gate_sigma_px)
    gated = flow * gate[..., None]
    consistent = float(agrees.sum() / max(int(covered.sum()), 1))
    every_4th = (slice(None, None, 4), slice(None, None, 4))  # a reported figure: a sample is enough
    sample = covered[every_4th]
    magnitude = float(np.linalg.norm(gated[every_4th][sample], axis=-1).mean()) if sample.any() else 0.0
    return Residual(gated, consistent, magnitude)
