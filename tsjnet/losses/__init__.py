"""TSJNet's training objective: fusion terms (``fusion.py``) and its weights (``config.py``)."""

from tsjnet.losses.config import LossConfig
from tsjnet.losses.fusion import diversity_loss, fusion_terms, gradient_magnitude, ssim_map

__all__ = ["LossConfig", "diversity_loss", "fusion_terms", "gradient_magnitude", "ssim_map"]
