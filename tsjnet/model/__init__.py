"""The TSJNet network, its configuration and its checkpoints."""

from tsjnet.model.config import TINY, TSJNetConfig
from tsjnet.model.tsjnet import FusionOutput, TSJNet, count_parameters

__all__ = ["TINY", "FusionOutput", "TSJNet", "TSJNetConfig", "count_parameters"]
