"""LayerNorm over the channels of an NCHW tensor (TSJNet's hand-written ``LayerNorm`` with bias:
biased variance, eps 1e-5), i.e. ``nn.LayerNorm(C)`` applied channels-last."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class ChannelLayerNorm(nn.Module):
    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normalised = F.layer_norm(x.permute(0, 2, 3, 1), self.weight.shape, self.weight, self.bias, self.eps)
        return normalised.permute(0, 3, 1, 2)
