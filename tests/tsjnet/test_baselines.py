from __future__ import annotations

import numpy as np

from tsjnet.baselines import collapse_pyramid, fuse_laplacian, fuse_max, fuse_mean, laplacian_pyramid


def test_pyramid_collapses_back_to_the_image():
    image = np.random.default_rng(0).uniform(0, 255, (75, 101)).astype(np.float32)
    assert np.abs(collapse_pyramid(laplacian_pyramid(image, 4)) - image).max() < 1e-3


def test_laplacian_fusion_keeps_the_stronger_detail():
    rng = np.random.default_rng(1)
    flat = np.full((64, 64), 100, np.float32)
    textured = (100 + 40 * np.sign(rng.standard_normal((64, 64)))).astype(np.float32)
    assert np.abs(fuse_laplacian(textured, textured) - textured).max() < 1e-3
    fused = fuse_laplacian(flat, textured)
    # all of the texture survives (not halved, as the mean would): the detail rule picks it
    assert np.std(fused) > 0.9 * np.std(textured)
    assert np.std(fuse_mean(flat, textured)) < 0.51 * np.std(textured)


def test_mean_and_max():
    a, b = np.array([[0.0, 200.0]]), np.array([[100.0, 50.0]])
    assert fuse_mean(a, b).tolist() == [[50.0, 125.0]]
    assert fuse_max(a, b).tolist() == [[100.0, 200.0]]
