"""TSJNet (Xu et al.): shared ResNeSt encoder, per-modality MDM (NAT + MFM branches), separate
fusion layers, ResNeSt decoder with 8-head spatial attention (docs/reference/tsjnet.md §1).

Inputs are B x 1 x H x W in [0, 1] with H, W multiples of 32 (``TSJNetConfig.size_multiple``);
``tsjnet.fuse`` pads arbitrary images for it.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn

from tsjnet.layers.mfm import MFM
from tsjnet.layers.nat import NATBranch, NATLevel
from tsjnet.layers.spatial_attention import SpatialAttention
from tsjnet.layers.split_attention import ResNeStTrunk
from tsjnet.model.config import TSJNetConfig


class Encoder(nn.Module):
    """BRE + MDM: image -> (NAT features, MFM features, F^B), all at full resolution."""

    def __init__(self, config: TSJNetConfig):
        super().__init__()
        self.stem_proj = nn.Conv2d(1, 3, 3, padding=1, bias=False)
        self.trunk = ResNeStTrunk(3, config.resnest_planes, config.resnest_depth)
        width, planes = self.trunk.out_channels, config.resnest_planes
        self.refine = nn.Sequential(nn.Conv2d(width, 2 * planes, 3, padding=1), nn.ReLU6(),
                                    nn.Conv2d(2 * planes, planes, 3, padding=1), nn.ReLU6(),
                                    nn.Conv2d(planes, config.feature_channels, 3, padding=1), nn.ReLU6())
        self.nat_branch = build_nat_branch(config)
        self.mfm_branch = build_mfm(config)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        base = self.refine(self.trunk(self.stem_proj(image)))
        return self.nat_branch(base), self.mfm_branch(base), base


class Decoder(nn.Module):
    """BRD: (NAT features, MFM features) -> (image in (0, 1), spatial-attention maps B x heads x H x W)."""

    def __init__(self, config: TSJNetConfig):
        super().__init__()
        self.merge = config.decoder_merge
        channels = config.feature_channels * (2 if self.merge == "concat" else 1)
        self.attention = SpatialAttention(channels, config.decoder_heads)
        self.reduce = nn.Conv2d(channels, config.decoder_reduce_channels, 1, bias=False)
        self.trunk = ResNeStTrunk(config.decoder_reduce_channels, config.resnest_planes, config.resnest_depth)
        width = self.trunk.out_channels
        self.head = nn.Sequential(nn.Conv2d(width, width // 2, 3, padding=1, bias=False), nn.LeakyReLU(0.01),
                                  nn.Conv2d(width // 2, 1, 3, padding=1, bias=False))

    def forward(self, nat: torch.Tensor, mfm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        merged = torch.cat([nat, mfm], dim=1) if self.merge == "concat" else nat + mfm
        gated, attention = self.attention(merged)
        image = torch.sigmoid(self.head(self.trunk(self.reduce(gated))))
        return image, attention


class FusionOutput(NamedTuple):
    fused: torch.Tensor
    attention: torch.Tensor
    visible_reconstruction: torch.Tensor | None = None
    infrared_reconstruction: torch.Tensor | None = None


class TSJNet(nn.Module):
    def __init__(self, config: TSJNetConfig | None = None):
        super().__init__()
        self.config = config or TSJNetConfig()
        self.encoder = Encoder(self.config)
        self.nat_fuse = build_nat_branch(self.config)
        self.mfm_fuse = build_mfm(self.config)
        self.decoder = Decoder(self.config)
        self.set_gradient_checkpointing(self.config.gradient_checkpointing)

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        for module in self.modules():
            if isinstance(module, NATLevel):
                module.gradient_checkpointing = enabled

    def check_input(self, image: torch.Tensor) -> None:
        multiple = self.config.size_multiple
        if image.ndim != 4 or image.shape[1] != 1:
            raise ValueError(f"TSJNet takes B x 1 x H x W images, got {tuple(image.shape)}")
        if image.shape[-2] % multiple or image.shape[-1] % multiple:
            raise ValueError(f"TSJNet needs H and W divisible by {multiple}, got {tuple(image.shape[-2:])} "
                             "(tsjnet.fuse pads images for you)")

    def forward(self, infrared: torch.Tensor, visible: torch.Tensor, reconstruct: bool = False) -> FusionOutput:
        """Fuse B x 1 x H x W infrared and visible (luma) images; ``reconstruct`` also decodes each
        modality's own features (the training graph's reconstruction terms)."""
        self.check_input(infrared)
        self.check_input(visible)
        nat_ir, mfm_ir, _ = self.encoder(infrared)
        nat_vi, mfm_vi, _ = self.encoder(visible)
        fused, attention = self.decoder(self.nat_fuse(nat_ir + nat_vi), self.mfm_fuse(mfm_ir + mfm_vi))
        if not reconstruct:
            return FusionOutput(fused, attention)
        visible_reconstruction, _ = self.decoder(nat_vi, mfm_vi)
        infrared_reconstruction, _ = self.decoder(nat_ir, mfm_ir)
        return FusionOutput(fused, attention, visible_reconstruction, infrared_reconstruction)


def build_nat_branch(config: TSJNetConfig) -> NATBranch:
    return NATBranch(config.feature_channels, embed_dim=config.nat_embed_dim, depths=config.nat_depths,
                     heads=config.nat_heads, kernel_size=config.nat_kernel_size, mlp_ratio=config.nat_mlp_ratio,
                     drop_path_rate=config.drop_path_rate, rel_pos_bias=config.rel_pos_bias,
                     keep_unused=config.official_layout)


def build_mfm(config: TSJNetConfig) -> MFM:
    return MFM(config.feature_channels, config.mfm_dropout, keep_unused=config.official_layout)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
