"""MFM, MDM's second branch (docs/reference/tsjnet.md §1.4): out = R(x) + S(x).

R, the residual sub-network with the "COA" gate: conv-BN-ReLU, f + ReLU(1x1(f)), conv-BN-ReLU,
channel dropout, 1x1. S, the salient path: LeakyReLU(3x3(x)), max-pool + avg-pool (/2), a squeeze-
and-excitation channel gate, a 2x2 transposed convolution back to full size (H, W must be even).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from tsjnet.layers.spatial_attention import SpatialAttention


class MFM(nn.Module):
    def __init__(self, channels: int = 64, dropout: float = 0.1, keep_unused: bool = False):
        super().__init__()
        self.residual_in = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                                         nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        self.coa = nn.Conv2d(channels, channels, 1)
        self.residual_mid = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                                          nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout2d(dropout)
        self.residual_out = nn.Conv2d(channels, channels, 1)
        self.salient_conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.channel_fc1 = nn.Linear(channels, channels // 2, bias=False)
        self.channel_fc2 = nn.Linear(channels // 2, channels, bias=False)
        self.upsample = nn.ConvTranspose2d(channels, channels, 2, stride=2)
        if keep_unused:
            # registered by the official code, never called (72 parameters)
            self.unused_spatial_attention = SpatialAttention(channels, 8)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        f = self.residual_in(x)
        f = f + F.relu(self.coa(f))
        return self.residual_out(self.dropout(self.residual_mid(f)))

    def salient(self, x: torch.Tensor) -> torch.Tensor:
        t = F.leaky_relu(self.salient_conv(x), 0.2)
        pooled = F.max_pool2d(t, 2, ceil_mode=True) + F.avg_pool2d(t, 2, ceil_mode=True)
        gate = torch.sigmoid(self.channel_fc2(F.relu(self.channel_fc1(pooled.mean(dim=(2, 3))))))
        return self.upsample(pooled * gate[:, :, None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.residual(x) + self.salient(x)
