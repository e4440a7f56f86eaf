"""Training engine: configuration, the loop, logs, checkpoints and exact resume, DDP."""

from tsjnet.engine.config import DataConfig, OptimConfig, TrainConfig
from tsjnet.engine.trainer import Trainer, train

__all__ = ["DataConfig", "OptimConfig", "TrainConfig", "Trainer", "train"]
