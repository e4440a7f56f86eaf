"""SD, CC and SCD: statistics of the fused image and its correlation with the sources.

SD = population standard deviation of F.
CC = combine(r(F, IR), r(F, VI)), r the Pearson correlation (TSJNet: the mean of the two).
SCD = r(F - VI, IR) + r(F - IR, VI) (the sum of the correlations of differences, always summed).
"""

from __future__ import annotations

import numpy as np

from tsjnet.metrics.convention import TSJNET, Convention, as_grey


def standard_deviation(fused: np.ndarray) -> float:
    return float(np.std(as_grey(fused)))


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = as_grey(a).ravel() - as_grey(a).mean()
    b = as_grey(b).ravel() - as_grey(b).mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denominator) if denominator > 0 else 0.0


def correlation_coefficient(fused: np.ndarray, infrared: np.ndarray, visible: np.ndarray,
                            convention: Convention = TSJNET) -> float:
    return convention.two_sources(pearson(fused, infrared), pearson(fused, visible))


def sum_of_correlations_of_differences(fused: np.ndarray, infrared: np.ndarray, visible: np.ndarray) -> float:
    f, ir, vi = as_grey(fused), as_grey(infrared), as_grey(visible)
    return pearson(f - vi, ir) + pearson(f - ir, vi)
