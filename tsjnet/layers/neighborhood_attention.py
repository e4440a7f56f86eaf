"""2-D neighborhood attention that runs anywhere, matching NATTEN.

natten >= 0.20 has no CPU kernels and no relative positional bias (RPB), while TSJNet's official
weights were trained with natten 0.14 and its RPB. This module computes exactly what NATTEN
computes (docs/reference/tsjnet.md §2.4): per axis, a query at in-group index i' of dilation group g attends to
the k keys centred on clamp(i', r, L_g - 1 - r); border windows shift inward, they are never
zero-padded; 2-D neighbourhoods are the product of the two axes' windows; optional RPB per head
from a (2k-1) x (2k-1) table indexed by in-group offsets. It uses ``natten.na2d`` when that can
give the same result faster (CUDA, no RPB, a grid of at least k*dilation), and a gather-based
PyTorch path otherwise.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def window_indices(length: int, kernel: int, dilation: int = 1, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(keys, offsets), each (length, kernel): the key coordinate of every query's window and the
    RPB index (in-group key - query offset + kernel - 1) of each key."""
    if length < kernel * dilation:
        raise ValueError(f"neighborhood attention needs an axis of at least kernel*dilation = {kernel * dilation}, "
                         f"got {length}")
    radius = kernel // 2
    position = torch.arange(length, device=device)
    group, in_group = position % dilation, position // dilation
    group_length = (length - group + dilation - 1) // dilation
    centre = torch.minimum(torch.clamp(in_group, min=radius), group_length - 1 - radius)
    steps = torch.arange(kernel, device=device)
    key_in_group = centre[:, None] - radius + steps[None, :]
    keys = key_in_group * dilation + group[:, None]
    offsets = key_in_group - in_group[:, None] + kernel - 1
    return keys, offsets


def neighborhood_attention_2d(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, kernel_size: int = 7,
                              dilation: int = 1, rpb: torch.Tensor | None = None,
                              scale: float | None = None) -> torch.Tensor:
    """NATTEN's ``na2d`` (heads-last: B x H x W x heads x D) with optional RPB (heads x 2k-1 x 2k-1).

    ``scale`` defaults to D^-0.5, applied to the query as NATTEN does."""
    batch, height, width, heads, dim = query.shape
    scale = dim**-0.5 if scale is None else scale
    rows, row_offsets = window_indices(height, kernel_size, dilation, query.device)
    cols, col_offsets = window_indices(width, kernel_size, dilation, query.device)
    # (B, H, W, k, k, heads, D): every query's 49 keys, gathered by advanced indexing
    row_index, col_index = rows[:, None, :, None], cols[None, :, None, :]
    keys = key[:, row_index, col_index]
    values = value[:, row_index, col_index]
    logits = torch.einsum("bxynd,bxyijnd->bxynij", query * scale, keys)
    if rpb is not None:
        bias = rpb[:, row_offsets[:, None, :, None], col_offsets[None, :, None, :]]  # heads, H, W, k, k
        logits = logits + bias.permute(1, 2, 0, 3, 4).unsqueeze(0)
    weights = F.softmax(logits.flatten(-2), dim=-1).view_as(logits)
    return torch.einsum("bxynij,bxyijnd->bxynd", weights, values)


# natten's fused kernels exist on CUDA only (its CPU fallback materialises every score: docs/reference/tsjnet.md §2.3)
NATTEN_DEVICES = {"cuda"}


def natten_has_kernels() -> bool:
    """natten is installed *with* libnatten: a build without CUDA (a pure-Python wheel) would run
    na2d through uncompiled flex attention, quadratic in memory, so the gather path is better."""
    try:
        import natten
    except ImportError:
        return False
    return bool(getattr(natten, "HAS_LIBNATTEN", False))


def _natten_can_run(tensor: torch.Tensor, kernel_size: int, dilation: int, rpb) -> bool:
    if rpb is not None or tensor.device.type not in NATTEN_DEVICES:
        return False
    _, height, width = tensor.shape[:3]
    return min(height, width) >= kernel_size * dilation and natten_has_kernels()


class NeighborhoodAttention2D(nn.Module):
    """Drop-in for ``natten.NeighborhoodAttention2D`` (parameters ``qkv``, ``proj``; optional ``rpb``).

    Input and output are channels-last, B x H x W x C, like NATTEN's module. Maps smaller than the
    window are zero-padded as natten <= 0.15 did (``pad_small_maps``); natten >= 0.17 refuses them."""

    def __init__(self, embed_dim: int, num_heads: int, kernel_size: int = 7, dilation: int = 1, qkv_bias: bool = True,
                 qk_scale: float | None = None, proj_drop: float = 0.0, rel_pos_bias: bool = False,
                 pad_small_maps: bool = True):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim = num_heads, embed_dim // num_heads
        self.kernel_size, self.dilation = kernel_size, dilation
        self.pad_small_maps = pad_small_maps
        self.scale = qk_scale or self.head_dim**-0.5
        self.qkv = nn.Linear(embed_dim, embed_dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(embed_dim, embed_dim)
        self.proj_drop = nn.Dropout(proj_drop)
        if rel_pos_bias:
            self.rpb = nn.Parameter(torch.zeros(num_heads, 2 * kernel_size - 1, 2 * kernel_size - 1))
            nn.init.trunc_normal_(self.rpb, std=0.02)
        else:
            self.register_parameter("rpb", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[1:3]
        window = self.kernel_size * self.dilation
        if self.pad_small_maps and (height < window or width < window):
            # natten <= 0.15 (TSJNet's weights): zero tokens appended bottom/right *before* the qkv
            # projection, so they are attended to with q/k/v equal to the qkv bias; cropped after
            padded = F.pad(x, (0, 0, 0, max(window - width, 0), 0, max(window - height, 0)))
            return self._attend(padded)[:, :height, :width]
        return self._attend(x)

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, channels = x.shape
        qkv = self.qkv(x).view(batch, height, width, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.unbind(3)
        if _natten_can_run(x, self.kernel_size, self.dilation, self.rpb):
            import natten

            out = natten.na2d(query, key, value, kernel_size=self.kernel_size, dilation=self.dilation, scale=self.scale)
        else:
            out = neighborhood_attention_2d(query, key, value, self.kernel_size, self.dilation, self.rpb, self.scale)
        return self.proj_drop(self.proj(out.reshape(batch, height, width, channels)))
