"""EN: Shannon entropy of the fused image's 256-bin histogram.

    EN = - sum_l p_l log p_l,  p_l = share of pixels with round(F) = l

Example: an image half 0 and half 255 has EN = 1 bit.
"""

from __future__ import annotations

import numpy as np

from tsjnet.metrics.convention import TSJNET, Convention, as_grey


def entropy(fused: np.ndarray, convention: Convention = TSJNET) -> float:
    values = np.clip(np.round(as_grey(fused)), 0, 255).astype(np.int64)
    probabilities = np.bincount(values.ravel(), minlength=256) / values.size
    probabilities = probabilities[probabilities > 0]
    return float(-(probabilities * np.log(probabilities)).sum() / np.log(convention.log_base))
