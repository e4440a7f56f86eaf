"""The residual refiner of the learned cascade (docs/reference/registration.md §6: the net models what is left
after the geometry and the global fit).

ECC has already brought the visible image onto the thermal grid with a global transform; what is
left is small and local: ECC's own error, parallax at low altitude, residual lens distortion. This
net predicts that residual as a dense backward flow of a few pixels, in both directions, from the
ECC-aligned pair. Its blocks (:mod:`ums.align.learned.blocks`) follow SuperFusion's registration
network (docs/reference/registration.md §1): per-modality encoders, L2-normalised local correlation
read out by a soft-argmax plus a zero-initialised residual head, Gaussian-smoothed fields, and one
pixel-centre warp. It stops at 1/4 and 1/2 resolution with small windows, so its reach is about
+-10 px and it runs on a 640x512 pair in ~0.1 s on one CPU core.

``forward`` returns the thermal -> visible flow and the visible -> thermal flow (full-resolution
pixels); their forward-backward consistency is the confidence the cascade acts on.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ums.align.ecc import gradient_representation
from ums.align.learned.blocks import (ConvNormAct, conv, local_correlation, soft_argmax, upsample_flow, warp,
                                      window_offsets)


class RefinerEncoder(nn.Module):
    """Full resolution -> features at 1/2 and 1/4; one per modality (their statistics differ). No
    full-resolution layer: the fields are smooth, and it would cost as much as the rest."""

    def __init__(self, in_ch: int, widths: tuple[int, int]):
        super().__init__()
        c2, c4 = widths
        self.to_half = nn.Sequential(ConvNormAct(in_ch, c2, stride=2), ConvNormAct(c2, c2))
        self.to_quarter = nn.Sequential(ConvNormAct(c2, c4, stride=2), ConvNormAct(c4, c4, dilation=2))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        half = self.to_half(x)
        return half, self.to_quarter(half)


class SeparableBlur(nn.Module):
    """A Gaussian blur of every channel as two 1-D passes, each channel as its own image: the same
    numbers as the 2-D depthwise blur (a Gaussian is separable, and so are zero and replicate
    padding) at a third of its time on one CPU core for 9 taps, more for wide kernels."""

    def __init__(self, sigma: float, size: int | None = None, padding_mode: str = "zeros"):
        super().__init__()
        size = size or 2 * int(3 * sigma) + 1
        taps = torch.exp(-((torch.arange(size, dtype=torch.float32) - size // 2) ** 2) / (2 * sigma**2))
        taps = taps / taps.sum()
        self.register_buffer("horizontal", taps.view(1, 1, 1, size), persistent=False)
        self.register_buffer("vertical", taps.view(1, 1, size, 1), persistent=False)
        self.pad, self.mode = size // 2, padding_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        if not torch.is_grad_enabled() and x.device.type == "cpu":
            return self._opencv(x)
        planes = x.reshape(n * c, 1, h, w)
        if self.mode == "zeros":
            planes = F.conv2d(planes, self.horizontal, padding=(0, self.pad))
            planes = F.conv2d(planes, self.vertical, padding=(self.pad, 0))
        else:
            planes = F.conv2d(F.pad(planes, (self.pad, self.pad, 0, 0), mode=self.mode), self.horizontal)
            planes = F.conv2d(F.pad(planes, (0, 0, self.pad, self.pad), mode=self.mode), self.vertical)
        return planes.reshape(n, c, h, w)

    def _opencv(self, x: torch.Tensor) -> torch.Tensor:
        """Inference on a CPU: the same taps through OpenCV's separable filter, ~5x faster than
        torch's single-channel convolutions for the wide kernels (the sums differ in the last bit)."""
        taps = self.horizontal.reshape(-1).numpy()
        border = cv2.BORDER_CONSTANT if self.mode == "zeros" else cv2.BORDER_REPLICATE
        planes = np.ascontiguousarray(x.numpy().reshape(-1, *x.shape[-2:]))
        out = np.stack([cv2.sepFilter2D(plane, -1, taps, taps, borderType=border) for plane in planes])
        return torch.from_numpy(out).reshape(x.shape)


class ResidualEstimator(nn.Module):
    """One level: correlation of the target with the (pre-warped) source over a (2r+1)^2 window,
    soft-argmax of it plus a small head's correction, smoothed; in this level's pixels.

    With ``spread`` > 0 the flow is also averaged over a Gaussian of that sigma (level pixels),
    weighted by a learned per-pixel confidence (normalised convolution): textured pixels carry the
    smooth field across the flat ones, which have no evidence of their own."""

    def __init__(self, channels: int, radius: int, head: int, temperature: float = 0.1, spread: float = 0.0):
        super().__init__()
        self.radius, self.temperature = radius, temperature
        self.spread = SeparableBlur(spread) if spread > 0 else None
        if self.spread is not None:
            self.confidence = nn.Conv2d(channels + (2 * radius + 1) ** 2, 1, 1)
        self.register_buffer("offsets", window_offsets(radius), persistent=False)
        cost = (2 * radius + 1) ** 2
        # a 1x1 mix first: the head's cost grows with the cost volume's 25 channels otherwise
        self.head = nn.Sequential(nn.Conv2d(channels + cost, head, 1), nn.LeakyReLU(0.1),
                                  ConvNormAct(head, head, dilation=2, norm="batch"), conv(head, 2))
        nn.init.zeros_(self.head[-1].weight)  # start as the pure correlation readout
        self.smooth = SeparableBlur(2.0, 9, "replicate")

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        cost = local_correlation(unit_channels(target), unit_channels(source), self.radius)
        features = torch.cat([target, cost], 1)
        flow = soft_argmax(cost, self.offsets, self.temperature) + self.head(features)
        if self.spread is not None:
            confidence = torch.sigmoid(self.confidence(features))
            spread = self.spread(torch.cat([flow * confidence, confidence], 1))
            flow = spread[:, :2] / (spread[:, 2:] + 1e-3)
        return self.smooth(flow)


class ResidualRefiner(nn.Module):
    """Thermal (N, 2, H, W) and ECC-aligned visible (N, 4, H, W) from :func:`network_inputs`, H and W
    multiples of 4 -> (thermal -> visible, visible -> thermal) backward flows, (N, 2, H, W) pixels."""

    def __init__(self, width: float = 1.0, radius: int = 2, half_radius: int = 1, spread: float = 8.0):
        super().__init__()
        c = lambda n: max(4, int(round(n * width)))  # noqa: E731
        self.config = {"width": width, "radius": radius, "half_radius": half_radius, "spread": spread}
        widths = (c(12), c(24))
        self.encoder_thermal = RefinerEncoder(2, widths)  # grey + gradient magnitude
        self.encoder_visible = RefinerEncoder(4, widths)  # RGB + gradient magnitude
        self.estimate_4 = ResidualEstimator(widths[1], radius, c(16), spread=spread)
        self.estimate_2 = ResidualEstimator(widths[0], half_radius, c(8), spread=spread)

    def forward(self, thermal: torch.Tensor, visible: torch.Tensor, return_levels: bool = False):
        thermal_2, thermal_4 = self.encoder_thermal(thermal)
        visible_2, visible_4 = self.encoder_visible(visible)
        size = thermal.shape[-2:]
        forward, forward_4 = self._direction((visible_2, visible_4), (thermal_2, thermal_4), size)
        backward, backward_4 = self._direction((thermal_2, thermal_4), (visible_2, visible_4), size)
        if return_levels:
            return forward, backward, [forward_4, backward_4]
        return forward, backward

    def _direction(self, source, target, size):
        """The flow on ``target``'s grid that samples ``source``: at 1/4, then refined at 1/2."""
        flow_4 = self.estimate_4(source[1], target[1])
        up = upsample_flow(flow_4, target[0].shape[-2:])
        flow_2 = up + self.estimate_2(warp(source[0], up), target[0])
        return upsample_flow(flow_2, size), upsample_flow(flow_4, size)


def consistency_error(forward: torch.Tensor, backward: torch.Tensor) -> torch.Tensor:
    """|f(x) + b(x + f(x))| per pixel (N, H, W): zero where the two directions agree."""
    return (forward + warp(backward, forward)).square().sum(1).sqrt()


def unit_channels(features: torch.Tensor) -> torch.Tensor:
    """Each pixel's feature vector scaled to length 1 (F.normalize's vector_norm over the channel
    axis of an NCHW tensor took ~20 ms for a 640x512 pair's 1/2 maps on one core; this takes ~1)."""
    return features * torch.rsqrt(features.square().sum(1, keepdim=True) + 1e-12)


def network_inputs(thermal: np.ndarray, visible_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 2) and (H, W, 4) float32 arrays from a grey thermal image and an RGB visible one (both
    float in [0, 1]): each with ECC's gradient-magnitude map appended. That map is where the two
    modalities agree (their edges coincide where their intensities do not); given to the net, it
    need not learn it. ~3 ms per 640x512 image with OpenCV."""
    visible_grey = cv2.cvtColor(visible_rgb, cv2.COLOR_RGB2GRAY)
    return (np.dstack([thermal, gradient_representation(thermal * 255)]).astype(np.float32),
            np.dstack([visible_rgb, gradient_representation(visible_grey * 255)]).astype(np.float32))
