"""SSIM with the Wang et al. (2004) settings: 11x11 Gaussian window (sigma 1.5), K1 0.01, K2 0.03,
L = the data range, population covariances; the mean SSIM map over the 'valid' region (windows
fully inside the image), combined over the two sources (TSJNet: mean; CDDFuse: sum).
"""

from __future__ import annotations

import cv2
import numpy as np

from tsjnet.metrics.convention import TSJNET, Convention, as_grey


def ssim_pair(a: np.ndarray, b: np.ndarray, data_range: float = 255.0, sigma: float = 1.5, window: int = 11) -> float:
    x, y = as_grey(a), as_grey(b)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def local_mean(image: np.ndarray) -> np.ndarray:
        blurred = cv2.GaussianBlur(image, (window, window), sigma, borderType=cv2.BORDER_REFLECT)
        margin = window // 2
        return blurred[margin:-margin, margin:-margin]  # 'valid': only windows inside the image

    mx, my = local_mean(x), local_mean(y)
    vx, vy = local_mean(x * x) - mx * mx, local_mean(y * y) - my * my
    cov = local_mean(x * y) - mx * my
    ssim_map = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(ssim_map.mean())


def ssim(fused: np.ndarray, infrared: np.ndarray, visible: np.ndarray, convention: Convention = TSJNET) -> float:
    return convention.two_sources(ssim_pair(fused, infrared, convention.data_range),
                                  ssim_pair(fused, visible, convention.data_range))
