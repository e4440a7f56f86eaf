"""The building blocks of the learned registration nets: convolutions, the local correlation and its
soft-argmax readout, and one warp convention for every flow.

Flows are backward flows in pixels of their own grid (pixel centres at integers), sampled with
``grid_sample(align_corners=False)``: the numpy convention of :mod:`ums.align.flow`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv(in_ch: int, out_ch: int, dilation: int = 1, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


class ConvNormAct(nn.Sequential):
    def __init__(self, in_ch, out_ch, dilation=1, stride=1, norm="instance", act="lrelu"):
        layers = [conv(in_ch, out_ch, dilation, stride)]
        norm_layer = nn.InstanceNorm2d if norm == "instance" else nn.BatchNorm2d
        layers.append(norm_layer(out_ch, affine=False))
        layers.append(nn.LeakyReLU(0.1) if act == "lrelu" else nn.ReLU())
        super().__init__(*layers)


def shifted_windows(source: torch.Tensor, size: tuple[int, int], reach: int, step: int):
    """``source`` seen at p + offset for the offsets of a (2 reach / step + 1)^2 grid (dy outer, dx
    inner), each an (N, C, *size) map, zero outside."""
    padded = F.pad(source, (reach,) * 4)
    h, w = size
    for dy in range(-reach, reach + 1, step):
        for dx in range(-reach, reach + 1, step):
            yield padded[..., reach + dy : reach + dy + h, reach + dx : reach + dx + w]


def local_correlation(target: torch.Tensor, source: torch.Tensor, radius: int) -> torch.Tensor:
    """Channel sum of target(p) * source(p + offset) for the (2 radius + 1)^2 offsets of step 1
    (dy outer, dx inner: the order of :func:`window_offsets`)."""
    windows = shifted_windows(source, target.shape[-2:], radius, 1)
    if torch.is_grad_enabled():
        return torch.cat([(target * shifted).sum(1, keepdim=True) for shifted in windows], 1)
    # inference: accumulate channel by channel into the output, without the product maps and the
    # concatenation (2x faster on one CPU core; the sums differ in their last bit)
    out = target.new_zeros((target.shape[0], (2 * radius + 1) ** 2, *target.shape[-2:]))
    for index, shifted in enumerate(windows):
        plane = out[:, index]
        for channel in range(target.shape[1]):
            plane.addcmul_(target[:, channel], shifted[:, channel])
    return out


def window_offsets(radius: int) -> torch.Tensor:
    """(2, (2 radius + 1)^2): the (x, y) offset of each channel of ``local_correlation``."""
    span = torch.arange(-radius, radius + 1, dtype=torch.float32)
    dy, dx = torch.meshgrid(span, span, indexing="ij")
    return torch.stack([dx.flatten(), dy.flatten()])


def soft_argmax(correlation: torch.Tensor, offsets: torch.Tensor, temperature: float) -> torch.Tensor:
    """The softmax-weighted mean offset of each pixel's correlation window, (N, 2, H, W): it moves
    with the correlation peak from the start of training, so the end-point error reaches the features."""
    weights = torch.softmax(correlation / temperature, 1)
    return torch.einsum("nkhw,ck->nchw", weights, offsets.to(correlation))


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample ``image`` at p + flow(p) (pixels, pixel centres at integers), zeros outside."""
    n, _, h, w = flow.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=flow.device, dtype=flow.dtype),
                            torch.arange(w, device=flow.device, dtype=flow.dtype), indexing="ij")
    x = (2 * (xs + flow[:, 0]) + 1) / w - 1
    y = (2 * (ys + flow[:, 1]) + 1) / h - 1
    return F.grid_sample(image, torch.stack([x, y], -1), mode="bilinear", padding_mode="zeros", align_corners=False)


def upsample_flow(flow: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a pixel-unit flow to ``size``, scaling its values with the grid."""
    scale_y, scale_x = size[0] / flow.shape[-2], size[1] / flow.shape[-1]
    resized = F.interpolate(flow, size=size, mode="bilinear", align_corners=False)
    return torch.stack([resized[:, 0] * scale_x, resized[:, 1] * scale_y], 1)


def pad_to_multiple(image: torch.Tensor, multiple: int = 8) -> tuple[torch.Tensor, tuple[int, int]]:
    """``image`` replicate-padded on the bottom and right to a multiple of ``multiple``, and its
    original (H, W) to crop the output back to."""
    h, w = image.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if pad_h or pad_w:
        image = F.pad(image, (0, pad_w, 0, pad_h), mode="replicate")
    return image, (h, w)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
