"""Each metric against an independent implementation where one exists, and against values worked
by hand on tiny images."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from skimage.metrics import structural_similarity
from sklearn.metrics import mutual_info_score

from tests.conftest import shared_data
from tsjnet.metrics import (
    CDDFUSE,
    average_gradient,
    correlation_coefficient,
    entropy,
    mean_squared_error,
    mutual_information,
    psnr,
    spatial_frequency,
    ssim,
    standard_deviation,
    sum_of_correlations_of_differences,
)
from tsjnet.metrics.mutual_information import mutual_information_pair
from tsjnet.metrics.ssim import ssim_pair


@pytest.fixture(scope="module")
def real_triplet():
    """A real MSRS pair and a simple fused image (their mean), as 0..255 grey."""
    ir = cv2.imread(str(shared_data("msrs", "ir", "00055D.png")), cv2.IMREAD_GRAYSCALE).astype(np.float64)
    vi = cv2.imread(str(shared_data("msrs", "vi", "00055D.png")), cv2.IMREAD_GRAYSCALE).astype(np.float64)
    return np.round((ir + vi) / 2), ir, vi


def test_hand_worked_values():
    half = np.zeros((4, 4))
    half[:, 2:] = 255
    assert entropy(half) == pytest.approx(1.0)
    assert entropy(np.arange(256).reshape(16, 16)) == pytest.approx(8.0)
    assert spatial_frequency(np.array([[0.0, 10.0], [0.0, 10.0]])) == pytest.approx(10.0)
    assert average_gradient(np.array([[0.0, 10.0], [20.0, 30.0]])) == pytest.approx(math.sqrt(250))
    assert standard_deviation(np.array([[0.0, 2.0], [4.0, 6.0]])) == pytest.approx(math.sqrt(5))
    f, a, b = np.full((2, 2), 10.0), np.zeros((2, 2)), np.full((2, 2), 30.0)
    assert mean_squared_error(f, a, b) == pytest.approx((100 + 400) / 2)
    assert mean_squared_error(f, a, b, CDDFUSE) == pytest.approx(500)
    assert psnr(f, a, b) == pytest.approx(10 * math.log10(255**2 / 250))


def test_ssim_equals_scikit_image_with_wang_settings(real_triplet):
    fused, ir, vi = real_triplet
    reference = structural_similarity(fused, ir, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                      data_range=255)
    assert ssim_pair(fused, ir) == pytest.approx(reference, abs=1e-6)
    both = [structural_similarity(fused, s, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                  data_range=255) for s in (ir, vi)]
    assert ssim(fused, ir, vi) == pytest.approx(np.mean(both), abs=1e-6)  # TSJNet: the mean
    assert ssim(fused, ir, vi, CDDFUSE) == pytest.approx(np.sum(both), abs=1e-6)  # CDDFuse: the sum
    assert ssim_pair(ir, ir) == pytest.approx(1.0)


def test_mutual_information_equals_sklearn(real_triplet):
    fused, ir, vi = real_triplet
    nats = mutual_info_score(fused.astype(np.uint8).ravel(), ir.astype(np.uint8).ravel())
    assert mutual_information_pair(fused, ir, math.e) == pytest.approx(nats, rel=1e-9)
    assert mutual_information_pair(fused, ir, 2.0) == pytest.approx(nats / math.log(2), rel=1e-9)
    expected_cddfuse = nats + mutual_info_score(fused.astype(np.uint8).ravel(), vi.astype(np.uint8).ravel())
    assert mutual_information(fused, ir, vi, CDDFUSE) == pytest.approx(expected_cddfuse, rel=1e-9)


def test_correlations_equal_numpy(real_triplet):
    fused, ir, vi = real_triplet
    r_ir = np.corrcoef(fused.ravel(), ir.ravel())[0, 1]
    r_vi = np.corrcoef(fused.ravel(), vi.ravel())[0, 1]
    assert correlation_coefficient(fused, ir, vi) == pytest.approx((r_ir + r_vi) / 2, rel=1e-9)
    expected_scd = (np.corrcoef((fused - vi).ravel(), ir.ravel())[0, 1]
                    + np.corrcoef((fused - ir).ravel(), vi.ravel())[0, 1])
    assert sum_of_correlations_of_differences(fused, ir, vi) == pytest.approx(expected_scd, rel=1e-9)


def test_per_image_psnr_average_sits_above_the_psnr_of_the_mean_mse():
    """The paper's consistency rule (docs/reference/metrics.md 2c): averaging per-image PSNR (Jensen) is never
    below 10 log10(255^2 / mean MSE)."""
    rng = np.random.default_rng(0)
    triplets = [tuple(rng.normal(128, spread, (32, 32)).clip(0, 255) for _ in range(3)) for spread in (5, 20, 60)]
    mean_psnr = np.mean([psnr(*t) for t in triplets])
    mean_mse = np.mean([mean_squared_error(*t) for t in triplets])
    assert mean_psnr >= 10 * math.log10(255**2 / mean_mse)
    assert mean_psnr - 10 * math.log10(255**2 / mean_mse) > 0.2  # different noise levels: a clear gap


def test_colour_images_use_bt601_luma():
    colour = np.zeros((2, 2, 3))
    colour[..., 2] = 100  # red in BGR order
    assert standard_deviation(colour) == 0 and entropy(colour) == 0
    assert mean_squared_error(colour, np.zeros((2, 2)), np.zeros((2, 2))) == pytest.approx(29.9**2)


def test_vif_equals_sewar_vifp(real_triplet):
    """sewar's vifp is an independent port of the same LIVE vifp_mscale."""
    from sewar.full_ref import vifp

    from tsjnet.metrics import vif
    from tsjnet.metrics.vif import vif_pair

    fused, ir, vi = real_triplet
    assert vif_pair(ir, fused) == pytest.approx(vifp(ir, fused), rel=1e-6)
    assert vif_pair(vi, fused) == pytest.approx(vifp(vi, fused), rel=1e-6)
    assert vif(fused, ir, vi) == pytest.approx((vifp(ir, fused) + vifp(vi, fused)) / 2, rel=1e-6)
    assert vif(fused, ir, vi, CDDFUSE) == pytest.approx(vifp(ir, fused) + vifp(vi, fused), rel=1e-6)
    assert vif_pair(ir, ir) == pytest.approx(1.0)


def naive_chen_varshney(fused, ir, vi):
    """Block by block and with an explicit DFT grid, straight from metricChen.m's steps."""
    def stretch(x):
        x = x.astype(float)
        return np.round((x - x.min()) / (x.max() - x.min()) * 255)

    def sobel(x):
        p = np.pad(x, 1)
        gx = p[:-2, 2:] + 2 * p[1:-1, 2:] + p[2:, 2:] - p[:-2, :-2] - 2 * p[1:-1, :-2] - p[2:, :-2]
        gy = p[2:, :-2] + 2 * p[2:, 1:-1] + p[2:, 2:] - p[:-2, :-2] - 2 * p[:-2, 1:-1] - p[:-2, 2:]
        return np.hypot(gx, gy)

    f, sources = stretch(fused), [stretch(ir), stretch(vi)]
    h, w = f.shape
    num = den = 0.0
    for s in sources:
        g = sobel(s)
        d = s - f
        spectrum = np.fft.fftshift(np.fft.fft2(d))
        weights = np.zeros((h, w))
        for i in range(h):
            for j in range(w):
                u = ((j - w // 2) * 2 / w) * w / 8
                v = ((i - h // 2) * 2 / h) * h / 8
                r = math.hypot(u, v)
                weights[i, j] = 2.6 * (0.0192 + 0.144 * r) * math.exp(-((0.144 * r) ** 1.1))
        filtered = np.fft.ifft2(np.fft.ifftshift(spectrum * weights))
        for bi in range(0, h, 16):
            for bj in range(0, w, 16):
                block = np.zeros((16, 16), complex)
                part = filtered[bi:bi + 16, bj:bj + 16]
                block[:part.shape[0], :part.shape[1]] = part
                saliency = (g[bi:bi + 16, bj:bj + 16] ** 5).sum()
                num += saliency * np.real((block**2).mean())
                den += saliency
    return num / den


def test_chen_varshney_against_a_block_by_block_reading():
    from tsjnet.metrics.chen_varshney import chen_varshney

    rng = np.random.default_rng(1)
    ir = cv2.GaussianBlur(rng.uniform(0, 255, (40, 56)), (0, 0), 2)
    vi = cv2.GaussianBlur(rng.uniform(0, 255, (40, 56)), (0, 0), 2)
    fused = (ir + vi) / 2
    assert chen_varshney(fused, ir, vi) == pytest.approx(naive_chen_varshney(fused, ir, vi), rel=1e-9)


def test_chen_varshney_properties(real_triplet):
    from tsjnet.metrics.chen_varshney import chen_varshney

    fused, ir, vi = real_triplet
    assert chen_varshney(ir, ir, ir) == 0  # a perfect fusion of identical sources
    assert chen_varshney(fused, ir, vi) == pytest.approx(chen_varshney(fused * 0.5 + 7, ir * 2 + 3, vi), rel=1e-9)
    noisy = np.clip(fused + np.random.default_rng(0).normal(0, 25, fused.shape), 0, 255)
    assert chen_varshney(noisy, ir, vi) > chen_varshney(fused, ir, vi)  # lower is better
