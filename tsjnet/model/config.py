"""TSJNet's configuration: the released network by default, every documented paper/code
difference a named option (docs/reference/tsjnet.md §1, §6.14)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator


class TSJNetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # natten <= 0.15 added a relative position bias (13x13 per head) to every attention layer;
    # off by default because natten >= 0.20 dropped it (the fused CUDA kernels cannot use it)
    rel_pos_bias: bool = False
    # keep the official code's never-called modules (NAT final norm, avgpool, conv_head; MFM's
    # spatial attention: 17,040 parameters) so official checkpoints load strictly
    official_layout: bool = False
    # how BRD receives the two feature sets: "concat" (code: NAT features first, 128 channels) or
    # "sum" (paper's Eq. 5: F_d + F_n, 64 channels)
    decoder_merge: Literal["concat", "sum"] = "concat"

    feature_channels: int = Field(64, description="width of F^B and of both MDM branches")
    resnest_planes: int = Field(128, description="bottleneck width of the encoder/decoder ResNeSt (output x4)")
    resnest_depth: int = 2
    nat_embed_dim: int = 64
    nat_depths: tuple[int, ...] = (3, 4, 6, 5)
    nat_heads: tuple[int, ...] = (2, 4, 8, 16)
    nat_kernel_size: int = 7
    nat_mlp_ratio: float = 3.0
    drop_path_rate: float = 0.2
    mfm_dropout: float = 0.1
    decoder_heads: int = 8
    decoder_reduce_channels: int = 32
    # recompute NAT layers in the backward pass instead of storing their 7x7 neighbourhoods
    gradient_checkpointing: bool = False

    @model_validator(mode="after")
    def _levels_agree(self) -> TSJNetConfig:
        if len(self.nat_depths) != len(self.nat_heads):
            raise ValueError(f"nat_depths {self.nat_depths} and nat_heads {self.nat_heads} differ in length")
        for level, heads in enumerate(self.nat_heads):
            if (self.nat_embed_dim * 2**level) % heads:
                raise ValueError(f"NAT level {level} width {self.nat_embed_dim * 2**level} is not divisible by {heads} heads")
        return self

    @property
    def size_multiple(self) -> int:
        """Inputs must have H and W divisible by this (tokenizer /4, then a /2 per level change)."""
        return 4 * 2 ** (len(self.nat_depths) - 1)

    @classmethod
    def load(cls, path: str | Path) -> TSJNetConfig:
        path = Path(path)
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        return cls.model_validate(data.get("model", data) if isinstance(data, dict) else data)


# tiny widths for tests and the demo: same graph, ~1/100 of the compute
TINY = dict(resnest_planes=16, nat_embed_dim=16, nat_depths=(1, 1, 1, 1), nat_heads=(1, 1, 2, 4),
            feature_channels=16, decoder_reduce_channels=8)
