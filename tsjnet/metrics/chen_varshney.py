"""CV: the Chen-Varshney fusion metric (Information Fusion 8(2), 2007), as in Liu et al.'s
``metricChen.m`` (the TSJNet paper's reference [55]; VIFB's ``metricsQcv.m``). Lower is better.

Each image is min-max stretched to 0..255 and rounded. Per 16 x 16 block (the last, partial blocks
zero-padded as MATLAB's ``blkproc`` does), a source's saliency is sum(G^5) of its Sobel gradient
magnitude G; the block's dissimilarity is the mean square of (source - fused) filtered in the
frequency domain by the Mannos-Sakrison CSF 2.6 (0.0192 + 0.144 r) exp(-(0.144 r)^1.1), with r the
radial frequency on MATLAB's ``freqspace`` grid scaled by (width/8, height/8). CV is the
saliency-weighted mean dissimilarity over both sources.
"""

from __future__ import annotations

import numpy as np

from tsjnet.metrics.convention import as_grey

BLOCK = 16
ALPHA = 5


def _stretch(image: np.ndarray) -> np.ndarray:
    image = as_grey(image)
    low, high = image.min(), image.max()
    if low == 0 and high == 0:
        return image
    if high == low:
        return np.zeros_like(image)
    return np.round((image - low) / (high - low) * 255)


def _sobel_magnitude(image: np.ndarray) -> np.ndarray:
    """MATLAB filter2 (correlation, zero 'same' border) with the two Sobel kernels."""
    padded = np.pad(image, 1)
    h, w = image.shape

    def correlate(kernel: np.ndarray) -> np.ndarray:
        return sum(kernel[i, j] * padded[i:i + h, j:j + w] for i in range(3) for j in range(3))

    gx = correlate(np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float))
    gy = correlate(np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], float))
    return np.sqrt(gx * gx + gy * gy)


def _blocks(values: np.ndarray, reduce) -> np.ndarray:
    h, w = values.shape
    padded = np.zeros((-(-h // BLOCK) * BLOCK, -(-w // BLOCK) * BLOCK), values.dtype)
    padded[:h, :w] = values
    tiles = padded.reshape(padded.shape[0] // BLOCK, BLOCK, padded.shape[1] // BLOCK, BLOCK)
    return reduce(tiles)


def _freqspace(n: int) -> np.ndarray:
    return (np.arange(n) - np.floor(n / 2)) * (2.0 / n)


def csf_mannos_sakrison(height: int, width: int) -> np.ndarray:
    u, v = np.meshgrid(_freqspace(width) * width / 8, _freqspace(height) * height / 8)
    r = np.sqrt(u * u + v * v)
    return 2.6 * (0.0192 + 0.144 * r) * np.exp(-((0.144 * r) ** 1.1))


def chen_varshney(fused: np.ndarray, infrared: np.ndarray, visible: np.ndarray) -> float:
    f, a, b = _stretch(fused), _stretch(infrared), _stretch(visible)
    csf = csf_mannos_sakrison(*f.shape)
    numerator = denominator = 0.0
    for source in (a, b):
        saliency = _blocks(_sobel_magnitude(source) ** ALPHA, lambda t: t.sum(axis=(1, 3)))
        spectrum = np.fft.fftshift(np.fft.fft2(source - f)) * csf
        filtered = np.fft.ifft2(np.fft.ifftshift(spectrum))
        # MATLAB squares the complex result; its real part is kept (the imaginary part is rounding)
        dissimilarity = np.real(_blocks(filtered.astype(np.complex128), lambda t: (t**2).mean(axis=(1, 3))))
        numerator += float((saliency * dissimilarity).sum())
        denominator += float(saliency.sum())
    return numerator / denominator if denominator > 0 else 0.0
