"""Research code, not part of the package: the from-scratch dense registration net ("DenseMatcher"),
its checkpoints and its inference. bench/dense_matcher_train.py trains it, bench/registration.py
``--weights`` scores a checkpoint, bench/gpu_align.sh trains the published size on a GPU.

A SuperFusion-style dense registration network (docs/reference/registration.md §1), adapted: the
target grid is the thermal one, flows are in pixels of their level, and one warp convention (pixel
centres, ``grid_sample(align_corners=False)``) is used everywhere (:mod:`ums.align.learned.blocks`,
which the package's residual refiner is built from too).

Coarse to fine: per-modality shallow encoders, a shared dilated pyramid (1/2, 1/4, 1/8), flow
estimators at 1/8 and 1/4, a correlation-free refiner at 1/2, and Gaussian smoothing of every field.
``width=1`` is the published size; smaller widths make the tiny models tests train on a CPU.

Two ways for an estimator to read its cost volume (``readout``):
- ``"regress"``, the published one: a 7x7 local SSD cost volume (step 4) and a conv head that
  regresses the flow (1,823,688 parameters at width 1).
- ``"soft-argmax"`` (our default): the cosine correlation of L2-normalised features over a 9x9
  window of step 1, read out as the softmax-weighted mean offset, plus a zero-initialised conv
  head's residual. Trained on IR/visible pairs, the published readout stayed at "no motion" for
  4,000 CPU steps while this one left it within 300 (bench/RESULTS.md): its output moves with the
  correlation peak from the start, so the end-point error reaches the features directly.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal, get_args

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ums.align.ecc import gradient_representation
from ums.align.flow import valid_mask, warp_with_flow
from ums.align.learned.blocks import (ConvNormAct, conv, local_correlation, pad_to_multiple, shifted_windows,
                                      soft_argmax, upsample_flow, warp, window_offsets)
from ums.align.learned.checkpoint import DENSE_MATCHER_FORMAT, read_torch
from ums.align.learned.inference import unit_rgb
from ums.align.registration import Registration


class Residual(nn.Module):
    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, x):
        return x + self.block(x)


class ModalityEncoder(nn.Sequential):
    """Full-resolution shallow encoder; one per modality, weights not shared."""

    def __init__(self, c1: int, c2: int):
        super().__init__(
            ConvNormAct(3, c1, 1),
            Residual(ConvNormAct(c1, c1, 2, act="relu")),
            ConvNormAct(c1, c2, 2),
            Residual(ConvNormAct(c2, c2, 4, act="relu")),
        )


class Pyramid(nn.Module):
    """Shared by both modalities: features at 1/2, 1/4 and 1/8."""

    def __init__(self, c_in: int, widths: tuple[int, int, int]):
        super().__init__()
        stages, previous = [], c_in
        for width, dilation in zip(widths, (1, 2, 4)):
            stages.append(nn.Sequential(ConvNormAct(previous, width, dilation),
                                        ConvNormAct(width, width, dilation, stride=2)))
            previous = width
        self.stages = nn.ModuleList(stages)

    def forward(self, x):
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


def gaussian_kernel(size: int, sigma: float, channels: int) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


class GaussianBlur(nn.Module):
    def __init__(self, size: int, sigma: float, channels: int, padding_mode: str):
        super().__init__()
        self.register_buffer("kernel", gaussian_kernel(size, sigma, channels), persistent=False)
        self.pad, self.mode, self.channels = size // 2, padding_mode, channels

    def forward(self, x):
        if self.mode == "zeros":
            return F.conv2d(x, self.kernel, padding=self.pad, groups=self.channels)
        return F.conv2d(F.pad(x, (self.pad,) * 4, mode=self.mode), self.kernel, groups=self.channels)


def local_ssd_cost(target: torch.Tensor, source: torch.Tensor, radius: int = 3, step: int = 4) -> torch.Tensor:
    """Channel-mean squared difference between target(p) and source(p + offset) for the
    (2 radius + 1)^2 offsets on a grid of ``step`` feature pixels (zero outside), in the order of
    ``local_correlation``."""
    windows = shifted_windows(source, target.shape[-2:], radius * step, step)
    return torch.cat([(target - shifted).pow(2).mean(1, keepdim=True) for shifted in windows], 1)


class FlowHead(nn.Sequential):
    def __init__(self, c_in: int, widths: tuple[int, ...]):
        layers, previous = [], c_in
        for width, dilation in zip(widths, (1, 2, 4)):
            layers.append(ConvNormAct(previous, width, dilation, norm="batch"))
            previous = width
        layers.append(conv(previous, 2))
        super().__init__(*layers)


class JointFeatures(nn.Module):
    """A shared linear conv on both maps, then their concatenation mixed down to C channels."""

    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.pre = conv(channels, channels, dilation)
        self.mix = nn.Sequential(conv(2 * channels, 2 * channels), nn.LeakyReLU(0.1), conv(2 * channels, channels))

    def forward(self, source, target):
        source, target = self.pre(source), self.pre(target)
        return source, target, self.mix(torch.cat([source, target], 1))


Readout = Literal["soft-argmax", "regress"]
READOUTS = get_args(Readout)


class FlowEstimator(nn.Module):
    """A level's flow in that level's pixels: joint features + local cost volume -> 2 channels."""

    def __init__(self, channels: int, dilation: int, readout: Readout = "soft-argmax", radius: int = 4,
                 temperature: float = 0.1, clamp_px: float = 150.0):
        super().__init__()
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {', '.join(READOUTS)}, not {readout!r}")
        self.readout, self.radius, self.temperature, self.clamp_px = readout, radius, temperature, clamp_px
        self.joint = JointFeatures(channels, dilation)
        if readout == "regress":
            self.blur_features = GaussianBlur(13, 3.0, channels, "zeros")
            cost_channels = 49
        else:
            self.register_buffer("offsets", window_offsets(radius), persistent=False)
            cost_channels = (2 * radius + 1) ** 2
        self.head = FlowHead(channels + cost_channels, (channels // 2, channels // 4, channels // 8))
        if readout == "soft-argmax":
            nn.init.zeros_(self.head[-1].weight)  # start from the pure correlation readout
        self.smooth = GaussianBlur(13, 3.0, 2, "replicate")

    def forward(self, source, target):
        source, target, joint = self.joint(source, target)
        if self.readout == "regress":
            cost = local_ssd_cost(target, self.blur_features(source))
            flow = self.head(torch.cat([joint, cost], 1))
        else:
            cost = local_correlation(F.normalize(target, dim=1), F.normalize(source, dim=1), self.radius)
            flow = soft_argmax(cost, self.offsets, self.temperature) + self.head(torch.cat([joint, cost], 1))
        return self.smooth(flow).clamp(-self.clamp_px, self.clamp_px)


class FlowRefiner(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.joint = JointFeatures(channels, 1)
        self.head = FlowHead(channels + 2, (channels // 2, channels // 4, channels // 8))
        self.smooth = GaussianBlur(17, 5.0, 2, "replicate")

    def forward(self, source, target, flow):
        _, _, joint = self.joint(source, target)
        return self.smooth(flow + self.head(torch.cat([joint, flow], 1)))


class DenseMatcher(nn.Module):
    """Thermal (fixed/target) and visible (moving/source), both (N, 3, H, W) in [0, 1], H and W
    multiples of 8 -> backward flow (N, 2, H, W) in pixels on the thermal grid."""

    def __init__(self, width: float = 1.0, readout: Readout = "soft-argmax"):
        super().__init__()
        c = lambda n: max(2, int(round(n * width)))  # noqa: E731
        self.config = {"width": width, "readout": readout}
        self.encoder_thermal = ModalityEncoder(c(8), c(16))
        self.encoder_visible = ModalityEncoder(c(8), c(16))
        self.pyramid = Pyramid(c(16), (c(32), c(64), c(128)))
        self.estimate_8 = FlowEstimator(c(128), 2, readout)
        self.estimate_4 = FlowEstimator(c(64), 4, readout)
        self.refine_2 = FlowRefiner(c(32))

    def forward(self, thermal: torch.Tensor, visible: torch.Tensor, return_levels: bool = False):
        batch = thermal.shape[0]
        features = self.pyramid(torch.cat([self.encoder_thermal(thermal), self.encoder_visible(visible)], 0))
        target = [f[:batch] for f in features]  # thermal: 1/2, 1/4, 1/8
        source = [f[batch:] for f in features]  # visible
        flow_8 = self.estimate_8(source[2], target[2])
        up_8 = upsample_flow(flow_8, target[1].shape[-2:])
        flow_4 = self.estimate_4(warp(source[1], up_8), target[1])
        half = target[0].shape[-2:]
        # additive composition is what the original does; fine for fields this smooth
        coarse = upsample_flow(up_8, half) + upsample_flow(flow_4, half)
        flow_2 = self.refine_2(warp(source[0], coarse), target[0], coarse)
        flow = upsample_flow(flow_2, thermal.shape[-2:])
        if return_levels:
            full = thermal.shape[-2:]
            return flow, [upsample_flow(up_8, full), upsample_flow(coarse, full)]
        return flow


def load_matcher(path: str | Path, device: str | torch.device = "cpu") -> DenseMatcher:
    """The dense matcher saved at ``path`` by bench/dense_matcher_train.py (or by `ums align-train
    --model dense` before the matcher left the package: the same format)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--weights {path}: no such file (train one with bench/dense_matcher_train.py)")
    checkpoint = read_torch(path, "--weights", device)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != DENSE_MATCHER_FORMAT:
        raise ValueError(f"--weights {path}: not a dense-matcher checkpoint written by bench/dense_matcher_train.py")
    # checkpoints from before the readout option hold the published one
    model = DenseMatcher(**{"readout": "regress", **checkpoint["config"]})
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval()


def is_dense_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` holds a dense matcher (else a residual refiner, for the package's cascade)."""
    path = Path(path)
    if path.suffix == ".safetensors" or not path.is_file():
        return False
    checkpoint = read_torch(path, "--weights")
    return isinstance(checkpoint, dict) and checkpoint.get("format") == DENSE_MATCHER_FORMAT


@lru_cache(maxsize=2)
def _cached_matcher(path: str, modified_ns: int, device: str) -> DenseMatcher:
    return load_matcher(path, device)


def to_tensor(image: np.ndarray, device: str | torch.device) -> torch.Tensor:
    """(1, 3, H, W) float in [0, 1], RGB; grey and 16-bit inputs are stretched and replicated."""
    return torch.from_numpy(unit_rgb(image)).permute(2, 0, 1)[None].to(device)


@torch.no_grad()
def matcher_flow(model: DenseMatcher, fixed: np.ndarray, moving: np.ndarray) -> np.ndarray:
    """``model``'s (H, W, 2) pixel flow on the fixed grid that registers ``moving`` onto ``fixed``."""
    device = next(model.parameters()).device
    thermal, (h, w) = pad_to_multiple(to_tensor(fixed, device))
    visible, _ = pad_to_multiple(to_tensor(moving, device))
    flow = model(thermal, visible)[0, :, :h, :w]
    return flow.permute(1, 2, 0).cpu().numpy().astype(np.float32)


def flow_confidence(fixed: np.ndarray, moving: np.ndarray, flow: np.ndarray) -> float:
    """The score ECC reports, for any flow: correlation of the gradient maps after warping."""
    fixed_rep = gradient_representation(fixed)
    warped = warp_with_flow(gradient_representation(moving), flow)
    inside = valid_mask(flow, moving.shape[:2])
    if inside.sum() < 64:
        return 0.0
    return float(max(cv2.computeECC(fixed_rep, warped, inside.astype(np.uint8)), 0.0))


def register_dense(fixed: np.ndarray, moving: np.ndarray, weights: str | Path, device: str = "cpu") -> Registration:
    """The dense matcher at ``weights`` alone, without ECC: ``register``'s result for it (loaded once
    per file version)."""
    path = Path(weights)
    if not path.is_file():
        load_matcher(path, device)  # raises the error that names --weights
    model = _cached_matcher(str(path), path.stat().st_mtime_ns, str(device))
    flow = matcher_flow(model, fixed, moving)
    return Registration(flow, flow_confidence(fixed, moving, flow), None, "dense-matcher", {"weights": str(path)})
