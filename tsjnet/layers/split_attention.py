"""ResNeSt trunk as TSJNet builds it (docs/reference/tsjnet.md §1.2): a stride-1 deep stem and split-attention
bottlenecks that keep full resolution.

TSJNet's split attention differs from the official ResNeSt: fc1/fc2 have no bias and fc2 is followed
by BatchNorm + ReLU, so the radix logits are never negative; the first block's shortcut is
MaxPool(3, stride 1) + 1x1 conv + BN. Both are reproduced because the released weights expect them.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = True,
                 groups: int = 1, relu: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias, groups=groups),
              nn.BatchNorm2d(out_channels)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class SplitAttention(nn.Module):
    """Radix-2, cardinality-1 split attention: two 3x3 group convolutions U1, U2; their sum, pooled,
    gives per-channel softmax weights over the radix; out = a1 * U1 + a2 * U2."""

    def __init__(self, channels: int, radix: int = 2):
        super().__init__()
        self.radix = radix
        inter_channels = max(32, channels * radix // 4)
        self.radix_conv = conv_bn_relu(channels, channels * radix, groups=radix)
        self.fc1 = conv_bn_relu(channels, inter_channels, kernel_size=1, bias=False)
        self.fc2 = conv_bn_relu(inter_channels, channels * radix, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        splits = self.radix_conv(x).chunk(self.radix, dim=1)
        pooled = sum(splits).mean(dim=(2, 3), keepdim=True)
        logits = self.fc2(self.fc1(pooled))
        batch = x.shape[0]
        weights = F.softmax(logits.view(batch, self.radix, -1), dim=1).view(batch, -1, 1, 1)
        return sum(w * s for w, s in zip(weights.chunk(self.radix, dim=1), splits))


class SplitAttentionBottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels: int, planes: int):
        super().__init__()
        out_channels = planes * self.expansion
        self.reduce = conv_bn_relu(in_channels, planes, kernel_size=1)
        self.split_attention = SplitAttention(planes)
        self.expand = conv_bn_relu(planes, out_channels, kernel_size=1, relu=False)
        if in_channels == out_channels:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1),
                                          nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.expand(self.split_attention(self.reduce(x)))
        return F.relu(out + self.shortcut(x))


class ResNeStTrunk(nn.Module):
    """Deep stem (three 3x3 conv-BN-ReLU, widths planes/2, planes/2, planes) and one stage of
    ``depth`` bottlenecks: ``in_channels`` -> 4 * planes channels at the input resolution."""

    def __init__(self, in_channels: int, planes: int = 128, depth: int = 2):
        super().__init__()
        stem_width = planes // 2
        self.stem = nn.Sequential(*conv_bn_relu(in_channels, stem_width), *conv_bn_relu(stem_width, stem_width),
                                  *conv_bn_relu(stem_width, planes))
        widths = [planes] + [planes * SplitAttentionBottleneck.expansion] * (depth - 1)
        self.blocks = nn.Sequential(*(SplitAttentionBottleneck(width, planes) for width in widths))
        self.out_channels = planes * SplitAttentionBottleneck.expansion

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x))
