"""Paired IR/visible training data: layouts on disk, paired augmentation, batching."""

from tsjnet.data.dataset import FusionDataset, collate
from tsjnet.data.layout import DatasetIndex, SampleFiles, discover

__all__ = ["DatasetIndex", "FusionDataset", "SampleFiles", "collate", "discover"]
