"""Training data of the residual refiner: what ECC leaves, drawn as dense fields.

Each public pair is first registered globally by ECC with the default motion, exactly as the
cascade does at run time, and its visible image warped onto the thermal grid: the pair's own
global misalignment is gone and does not pollute the targets. A sample then draws a residual
field r (the regimes below), and resamples the ECC-aligned visible image by the inverse
of r, so that the thermal pixel x sees its visible content at x + r(x): the forward target is r on
the thermal grid, the backward target is the inverse field on the visible grid. The thermal image
is never resampled, as at run time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from ums.align.deformation import FieldRange, random_field, smooth_field
from ums.align.ecc import RegistrationFailure
from ums.align.flow import identity_grid, warp_with_flow
from ums.align.learned.refiner import network_inputs


@dataclass(frozen=True)
class ResidualRegime:
    share: float  # probability of the regime
    sigma_px: tuple[float, float] = (0.0, 0.0)  # smoothness of the local part (0: none)
    rms_px: tuple[float, float] = (0.0, 0.0)  # its root-mean-square displacement
    global_part: bool = True  # plus a small global error, as ECC leaves one


# what ECC leaves on drone frames: well under a pixel of translation, hundredths of a degree
ECC_LEFTOVER = FieldRange(rotation_deg=0.15, scale=0.004, shear=0.0, translation_px=1.0, elastic_px=0.0)
REGIMES = (
    ResidualRegime(0.15, global_part=False),  # already aligned: predict zero
    ResidualRegime(0.15),  # ECC's small global error alone
    ResidualRegime(0.35, (30.0, 80.0), (0.0, 2.0)),  # elastic: residual distortion, terrain
    ResidualRegime(0.35, (15.0, 30.0), (1.0, 3.0)),  # parallax-like: objects at other depths
)


def residual_field(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """An (H, W, 2) float32 residual backward flow drawn from :data:`REGIMES`."""
    regime = REGIMES[rng.choice(len(REGIMES), p=[r.share for r in REGIMES])]
    field = random_field(shape, rng, ECC_LEFTOVER) if regime.global_part else np.zeros(shape + (2,), np.float32)
    if regime.sigma_px[1] > 0:
        field += smooth_field(shape, rng, rng.uniform(*regime.sigma_px), rng.uniform(*regime.rms_px))
    return field


def invert_field(field: np.ndarray, iterations: int = 6) -> np.ndarray:
    """The backward flow of the inverse map: q + inverse(q) = x where x + field(x) = q.

    Fixed-point iteration inverse(q) = -field(q + inverse(q)); for fields this smooth (a gradient
    well under 1) it converges to ~1e-4 px in a few steps."""
    grid = identity_grid(*field.shape[:2])
    inverse = -field.copy()
    for _ in range(iterations):
        at = grid + inverse
        inverse = -cv2.remap(field, at[..., 0], at[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return inverse


def globally_aligned(ir: np.ndarray, vi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A grey uint8 thermal and BGR visible pair as training material: the thermal image (float in
    [0, 1]), the visible image ECC-registered onto the thermal grid (the cascade's first step; RGB
    float in [0, 1]) and the mask of where it has content."""
    from ums.align.registration import register

    try:
        registration = register(ir, vi)
        aligned = registration.warp(vi)
        inside = registration.warp(np.full(ir.shape, 255, np.uint8)) == 255
    except RegistrationFailure:
        aligned, inside = vi, np.full(ir.shape, True)
    return ir.astype(np.float32) / 255, cv2.cvtColor(aligned, cv2.COLOR_BGR2RGB).astype(np.float32) / 255, inside


@dataclass
class ResidualCase:
    fixed: np.ndarray  # float32 (H, W) in [0, 1]
    moving: np.ndarray  # float32 (H, W, 3) RGB in [0, 1]
    forward: np.ndarray  # (H, W, 2) target on the thermal grid
    backward: np.ndarray  # (H, W, 2) target on the visible grid
    forward_valid: np.ndarray  # bool (H, W)
    backward_valid: np.ndarray


def residual_case(ir: np.ndarray, aligned: np.ndarray, inside: np.ndarray, field: np.ndarray,
                  origin: tuple[int, int] = (0, 0)) -> ResidualCase:
    """The thermal window at ``origin`` of ``field``'s size and the aligned visible image resampled
    so that thermal pixel x finds its content at x + field(x)."""
    h, w = field.shape[:2]
    x0, y0 = origin
    inverse = invert_field(field)
    moving = warp_with_flow(aligned, inverse, origin=origin)
    moving_inside = warp_with_flow(inside.astype(np.float32), inverse, origin=origin) > 0.999
    target = identity_grid(h, w) + field
    lands_inside = (target[..., 0] >= 0) & (target[..., 0] <= w - 1) & (target[..., 1] >= 0) & (target[..., 1] <= h - 1)
    forward_valid = lands_inside & inside[y0:y0 + h, x0:x0 + w]
    return ResidualCase(ir[y0:y0 + h, x0:x0 + w], moving, field, inverse, forward_valid, moving_inside)


class ResidualSampler:
    """Random crops of residual cases from ECC-aligned pairs, batched as tensors.

    Sample ``index`` of step ``step`` draws from its own generator seeded with (seed, step, index), so
    a resumed run needs only its step count."""

    def __init__(self, pairs: list[tuple[Path, Path]], crop: int, seed: int = 0):
        from ums.align.learned.train import read_pair

        self.crop, self.seed = crop, seed
        self.images = []
        for ir_path, vi_path in pairs:
            ir, vi = read_pair(ir_path, vi_path)
            if min(ir.shape) < crop:
                continue
            self.images.append(globally_aligned(ir, vi))
        if not self.images:
            raise ValueError(f"align-train: no pair is at least {crop} px on its short side (--crop)")

    def sample(self, rng: np.random.Generator) -> ResidualCase:
        ir, aligned, inside = self.images[rng.integers(len(self.images))]
        if rng.random() < 0.5:  # a mirrored pair is still aligned
            ir, aligned, inside = (np.ascontiguousarray(a[:, ::-1]) for a in (ir, aligned, inside))
        field = residual_field((self.crop, self.crop), rng)
        origin = (int(rng.integers(0, ir.shape[1] - self.crop + 1)), int(rng.integers(0, ir.shape[0] - self.crop + 1)))
        case = residual_case(ir, aligned, inside, field, origin)
        case.moving = _photometric_jitter(case.moving, rng)
        return case

    def batch(self, size: int, device: torch.device, step: int = 0) -> dict[str, torch.Tensor]:
        cases = [self.sample(np.random.default_rng([self.seed, step, index])) for index in range(size)]
        return cases_to_batch(cases, device)


def cases_to_batch(cases: list[ResidualCase], device: torch.device) -> dict[str, torch.Tensor]:
    def stack(values: list[np.ndarray]) -> torch.Tensor:
        values = torch.from_numpy(np.stack([np.asarray(v, np.float32) for v in values]))
        return values.permute(0, 3, 1, 2) if values.ndim == 4 else values[:, None]

    inputs = [network_inputs(case.fixed, case.moving) for case in cases]
    batch = {"fixed": stack([i[0] for i in inputs]), "moving": stack([i[1] for i in inputs]),
             **{name: stack([getattr(case, name) for case in cases])
                for name in ("forward", "backward", "forward_valid", "backward_valid")}}
    return {key: value.to(device) for key, value in batch.items()}


def _photometric_jitter(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Exposure, contrast and sensor noise of other flights: the net must not key on them."""
    gamma = float(np.exp(rng.uniform(-0.4, 0.4)))
    gain, bias = rng.uniform(0.7, 1.3), rng.uniform(-0.1, 0.1)
    noisy = gain * np.power(np.clip(rgb, 0, 1), gamma) + bias + rng.normal(0, rng.uniform(0, 0.02), rgb.shape)
    return np.clip(noisy, 0, 1).astype(np.float32)
