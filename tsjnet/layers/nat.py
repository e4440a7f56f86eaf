"""NAT-Mini as TSJNet's MDM uses it (docs/reference/tsjnet.md §1.3): an overlapping conv tokenizer (/4), four
levels of pre-norm neighborhood-attention layers with conv downsamplers between them (/32 in all),
then a head that returns to the input resolution with transposed convolutions (x4, x4, x2)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.utils.checkpoint
from torchvision.ops import StochasticDepth

from tsjnet.layers.channel_norm import ChannelLayerNorm
from tsjnet.layers.neighborhood_attention import NeighborhoodAttention2D


class ConvTokenizer(nn.Module):
    """Two overlapping 3x3 stride-2 convolutions (no activation between), then LayerNorm: NCHW in,
    channels-last out."""

    def __init__(self, in_channels: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(in_channels, embed_dim // 2, 3, stride=2, padding=1),
                                  nn.Conv2d(embed_dim // 2, embed_dim, 3, stride=2, padding=1))
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class ConvDownsampler(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.reduction = nn.Conv2d(dim, 2 * dim, 3, stride=2, padding=1, bias=False)
        self.norm = nn.LayerNorm(2 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.reduction(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


class Mlp(nn.Module):
    def __init__(self, dim: int, ratio: float):
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class NATLayer(nn.Module):
    def __init__(self, dim: int, heads: int, kernel_size: int, mlp_ratio: float, drop_path: float,
                 rel_pos_bias: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = NeighborhoodAttention2D(dim, heads, kernel_size, rel_pos_bias=rel_pos_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_ratio)
        self.drop_path = StochasticDepth(drop_path, "row")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class NATLevel(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, kernel_size: int, mlp_ratio: float,
                 drop_paths: Sequence[float], rel_pos_bias: bool, downsample: bool):
        super().__init__()
        self.blocks = nn.ModuleList(NATLayer(dim, heads, kernel_size, mlp_ratio, rate, rel_pos_bias)
                                    for rate in drop_paths)
        self.downsample = ConvDownsampler(dim) if downsample else None
        self.gradient_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            if self.gradient_checkpointing and x.requires_grad:
                # the gathered 7x7 neighbourhoods dominate training memory; recompute them instead
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x if self.downsample is None else self.downsample(x)


class NATMini(nn.Module):
    """``in_channels`` x H x W -> ``out_channels`` x H x W (H, W multiples of 32), ReLU6-bounded.

    ``keep_unused`` registers the official code's final LayerNorm, ``avgpool`` and ``conv_head``
    (8,448 parameters that never run) so that official checkpoints load strictly."""

    def __init__(self, in_channels: int = 64, out_channels: int = 64, embed_dim: int = 64,
                 depths: Sequence[int] = (3, 4, 6, 5), heads: Sequence[int] = (2, 4, 8, 16), kernel_size: int = 7,
                 mlp_ratio: float = 3.0, drop_path_rate: float = 0.2, rel_pos_bias: bool = False,
                 keep_unused: bool = False):
        super().__init__()
        self.tokenizer = ConvTokenizer(in_channels, embed_dim)
        total = sum(depths)
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]  # linspace(0, rate, total)
        self.levels = nn.ModuleList()
        for index, (depth, level_heads) in enumerate(zip(depths, heads)):
            first = sum(depths[:index])
            self.levels.append(NATLevel(embed_dim * 2**index, depth, level_heads, kernel_size, mlp_ratio,
                                        rates[first:first + depth], rel_pos_bias,
                                        downsample=index < len(depths) - 1))
        deepest, hidden = embed_dim * 2 ** (len(depths) - 1), 2 * embed_dim
        self.head = nn.Sequential(
            nn.Conv2d(deepest, hidden, 3, padding=1), nn.ReLU6(),
            nn.Conv2d(hidden, out_channels, 3, padding=1), nn.ReLU6(),
            nn.ConvTranspose2d(out_channels, out_channels, 4, stride=4, bias=False),
            nn.ConvTranspose2d(out_channels, out_channels, 4, stride=4, bias=False),
            nn.ConvTranspose2d(out_channels, out_channels, 2, stride=2, bias=False),
            nn.ReLU6())
        if keep_unused:
            self.norm = nn.LayerNorm(embed_dim)
            self.avgpool = nn.Conv2d(out_channels, out_channels, 1)
            self.conv_head = nn.Conv2d(out_channels, out_channels, 1)
        self.apply(_init_nat_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.tokenizer(x)
        for level in self.levels:
            tokens = level(tokens)
        return self.head(tokens.permute(0, 3, 1, 2))


def _init_nat_weights(module: nn.Module) -> None:
    """NAT's initialisation (Linear trunc-normal 0.02, LayerNorm 1/0); convolutions keep PyTorch's."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class NATBranch(nn.Module):
    """MDM's NAT branch and the NAT fusion layer: x + NATMini(ChannelLayerNorm(x))."""

    def __init__(self, channels: int = 64, **nat_options):
        super().__init__()
        self.norm = ChannelLayerNorm(channels)
        self.nat = NATMini(channels, channels, **nat_options)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.nat(self.norm(x))
