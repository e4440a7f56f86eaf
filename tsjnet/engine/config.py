"""``tsjnet train``'s configuration: one pydantic tree, loaded from YAML (pipelines/train*.yaml) and
overridden by command-line flags. Defaults are the official run's (docs/reference/tsjnet.md §4.1) with its
defects fixed: Adam lr 1e-4 with L2 0.01, batch 2, ReduceLROnPlateau(0.1, patience 3) on the epoch
loss, clipping at 1.0 *after* unscaling."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tsjnet.losses import LossConfig
from tsjnet.model import TSJNetConfig
from tsjnet.task_heads import TaskConfig
from ums.core.config import load_config


class DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    root: Path | None = None
    # names --data accepts besides a path: an `ums export --format msrs` folder, the public MSRS
    named_roots: dict[str, Path] = Field(default_factory=lambda: {"ums": Path("ums-export"),
                                                                  "msrs": Path("data/MSRS")})
    train_split: str = "train"
    val_split: str | None = "val"  # None or absent split list: no validation
    box_view: str = "fusion"  # which labels_det_yolo/<view> of public MSRS to read
    crop: tuple[int, int] | None = None  # training crop (H, W); None = whole images (one size per batch)
    resize: tuple[int, int] | None = None  # scale every pair first (small CPU runs)
    augment: bool = True
    visible_input: Literal["luma", "red"] = "luma"  # "red": the official training's R channel (docs/reference/tsjnet.md §1.1)
    num_workers: int = 2


    def resolve_root(self, data: str | Path) -> Path:
        """A path as given, or the folder a dataset name stands for."""
        path = Path(data)
        if path.exists() or str(data) not in self.named_roots:
            return path
        return self.named_roots[str(data)]


class OptimConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    optimizer: Literal["adam", "adamw"] = "adam"  # adam: L2 added to the gradient, as the official run
    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    clip_grad_norm: float | None = 1.0
    scheduler: Literal["plateau", "cosine", "none"] = "plateau"
    plateau_factor: float = 0.1
    plateau_patience: int = 3


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: TSJNetConfig = Field(default_factory=TSJNetConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    tasks: TaskConfig = Field(default_factory=TaskConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    out: Path = Path("runs/tsjnet")
    epochs: int = 100
    max_steps: int | None = None  # stop (and checkpoint) after this many optimiser steps in all
    batch_size: int = 2  # per process; split attention's BatchNorm needs at least 2 in train mode
    amp: Literal["none", "bf16", "fp16"] = "none"
    grad_scaler_init: float = 65536.0  # fp16 only: GradScaler's starting scale (PyTorch's default)
    compile: bool = False
    device: str = "auto"
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int | None = None  # steps between mid-epoch checkpoints (every epoch end always)
    val_every: int = 1  # epochs
    val_images: int = 4  # pairs shown in the sample image of each validation
    show_progress: bool = True

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides) -> TrainConfig:
        """Defaults, then the YAML file, then the non-None ``overrides`` (nested dicts merge)."""
        return load_config(cls, path, **overrides)
