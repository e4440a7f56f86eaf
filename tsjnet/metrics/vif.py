"""VIF: pixel-domain multiscale visual information fidelity (Sheikh & Bovik 2006; LIVE ``vifp_mscale``),
of the fused image as the "distorted" version of each source, combined over the two sources.

At scales s = 1..4 a Gaussian window of N = 2^(5-s) + 1 taps (sigma N/5) gives local means and
(co)variances ('valid' region; from scale 2 on the images are first filtered and decimated by 2);
with g = cov / var_ref and the noise variance sigma_n^2 = 2 (for 0..255 data: the reason the range
matters), VIF = sum log10(1 + g^2 var_ref / (var_noise + sigma_n^2)) / sum log10(1 + var_ref / sigma_n^2).
CDDFuse calls this "VIFF" and sums the two sources; TSJNet's values (0.14-0.45) are a mean.
"""

from __future__ import annotations

import cv2
import numpy as np

from tsjnet.metrics.convention import TSJNET, Convention, as_grey

EPS = 1e-10


def _gaussian_window(size: int, sigma: float) -> np.ndarray:
    coords = np.arange(size) - (size - 1) / 2
    window = np.exp(-(coords[:, None] ** 2 + coords[None, :] ** 2) / (2 * sigma**2))
    return window / window.sum()


def _filter_valid(image: np.ndarray, window: np.ndarray) -> np.ndarray:
    """MATLAB filter2(window, image, 'valid'): correlation, keeping only windows fully inside."""
    filtered = cv2.filter2D(image, cv2.CV_64F, window, borderType=cv2.BORDER_CONSTANT)
    margin = window.shape[0] // 2
    return filtered[margin:image.shape[0] - margin, margin:image.shape[1] - margin]


def vif_pair(reference: np.ndarray, distorted: np.ndarray, noise_variance: float = 2.0) -> float:
    ref, dist = as_grey(reference), as_grey(distorted)
    numerator = denominator = 0.0
    for scale in range(1, 5):
        size = 2 ** (4 - scale + 1) + 1
        window = _gaussian_window(size, size / 5)
        if scale > 1:
            ref = _filter_valid(ref, window)[::2, ::2]
            dist = _filter_valid(dist, window)[::2, ::2]
        mu_ref, mu_dist = _filter_valid(ref, window), _filter_valid(dist, window)
        var_ref = np.maximum(_filter_valid(ref * ref, window) - mu_ref**2, 0)
        var_dist = np.maximum(_filter_valid(dist * dist, window) - mu_dist**2, 0)
        covariance = _filter_valid(ref * dist, window) - mu_ref * mu_dist
        gain = covariance / (var_ref + EPS)
        noise = var_dist - gain * covariance
        flat_ref = var_ref < EPS
        gain[flat_ref] = 0
        noise[flat_ref] = var_dist[flat_ref]
        var_ref[flat_ref] = 0
        flat_dist = var_dist < EPS
        gain[flat_dist] = 0
        noise[flat_dist] = 0
        negative = gain < 0
        noise[negative] = var_dist[negative]
        gain[negative] = 0
        noise = np.maximum(noise, EPS)
        numerator += np.sum(np.log10(1 + gain**2 * var_ref / (noise + noise_variance)))
        denominator += np.sum(np.log10(1 + var_ref / noise_variance))
    return float(numerator / denominator)


def vif(fused: np.ndarray, infrared: np.ndarray, visible: np.ndarray, convention: Convention = TSJNET) -> float:
    return convention.two_sources(vif_pair(infrared, fused), vif_pair(visible, fused))
