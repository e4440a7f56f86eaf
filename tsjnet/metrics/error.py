"""MSE and PSNR of the fused image against the sources.

MSE = combine(mean (F - IR)^2, mean (F - VI)^2) on 0..255 data (TSJNet's 1500-9600 range).
PSNR per image = 10 log10(peak^2 / MSE) with peak = the convention's data range (255); a dataset's
PSNR is the mean of the per-image values, which is why the paper's PSNR sits 0.2-2.7 dB above
10 log10(255^2 / mean MSE) (Jensen's inequality; docs/reference/metrics.md 2c).
"""

from __future__ import annotations

import numpy as np

from tsjnet.metrics.convention import TSJNET, Convention, as_grey


def mean_squared_error(fused: np.ndarray, infrared: np.ndarray, visible: np.ndarray,
                       convention: Convention = TSJNET) -> float:
    f = as_grey(fused)
    return convention.two_sources(float(np.mean((f - as_grey(infrared)) ** 2)),
                                  float(np.mean((f - as_grey(visible)) ** 2)))


def psnr(fused: np.ndarray, infrared: np.ndarray, visible: np.ndarray, convention: Convention = TSJNET) -> float:
    # the average of the two sources' MSE, never their sum: PSNR is a per-image ratio to the peak
    error = mean_squared_error(fused, infrared, visible, TSJNET)
    return float("inf") if error == 0 else float(10 * np.log10(convention.data_range**2 / error))
