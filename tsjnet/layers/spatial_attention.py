"""Dataset-agnostic spatial attention (Chang et al., CVPR 2023, as used by TSJNet's decoder):
the channels are cut into ``heads`` consecutive groups; each group is gated by its own sigmoid map
from a 1x1 convolution of that group. The maps are returned too: the diversity loss needs them.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class SpatialAttention(nn.Module):
    def __init__(self, channels: int, heads: int = 8):
        super().__init__()
        if channels % heads:
            raise ValueError(f"{channels} channels cannot be split into {heads} attention heads")
        self.group = channels // heads
        self.heads = nn.ModuleList(nn.Conv2d(self.group, 1, 1) for _ in range(heads))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        groups = x.split(self.group, dim=1)
        maps = [torch.sigmoid(conv(g)) for conv, g in zip(self.heads, groups)]
        gated = torch.cat([g * m for g, m in zip(groups, maps)], dim=1)
        return gated, torch.cat(maps, dim=1)
