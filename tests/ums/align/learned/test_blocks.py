"""The learned nets' building blocks: the correlation window and its soft-argmax readout, the warp
convention the numpy flows use, flow resizing and padding."""

from __future__ import annotations

import numpy as np
import torch

from ums.align.deformation import DRONE, random_field
from ums.align.flow import warp_with_flow
from ums.align.learned.blocks import (ConvNormAct, local_correlation, pad_to_multiple, parameter_count, soft_argmax,
                                      upsample_flow, warp, window_offsets)


def test_local_correlation_peaks_at_the_true_offset():
    source = torch.nn.functional.normalize(torch.rand(1, 4, 40, 40) - 0.5, dim=1)
    target = torch.roll(source, shifts=(-3, 1), dims=(2, 3))  # target(p) = source(p + (dy=3, dx=-1))
    correlation = local_correlation(target, source, radius=4)
    offsets = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)]
    assert offsets[correlation[0, :, 8:32, 8:32].mean((1, 2)).argmax()] == (3, -1)


def test_inference_correlation_is_the_training_one():
    """The channel-by-channel accumulation used without gradients gives the training sums."""
    target, source = torch.rand(2, 5, 12, 16), torch.rand(2, 5, 12, 16)
    with torch.enable_grad():
        trained = local_correlation(target, source, radius=2)
    with torch.no_grad():
        inferred = local_correlation(target, source, radius=2)
    assert trained.shape == (2, 25, 12, 16) and torch.allclose(trained, inferred, atol=1e-5)


def test_soft_argmax_reads_the_peak_offset_in_x_y_order():
    offsets = window_offsets(2)
    assert offsets.shape == (2, 25) and offsets[:, 0].tolist() == [-2.0, -2.0] and offsets[:, 7].tolist() == [0.0, -1.0]
    correlation = torch.zeros(1, 25, 3, 4)
    correlation[:, 7] = 10.0  # dy = -1, dx = 0
    flow = soft_argmax(correlation, offsets, temperature=0.1)
    assert torch.allclose(flow[:, 0], torch.zeros(1, 3, 4), atol=1e-6)
    assert torch.allclose(flow[:, 1], torch.full((1, 3, 4), -1.0), atol=1e-6)


def test_torch_warp_matches_the_numpy_convention():
    rng = np.random.default_rng(0)
    image = rng.random((48, 64)).astype(np.float32)
    flow = random_field((48, 64), rng, DRONE)
    expected = warp_with_flow(image, flow)
    ours = warp(torch.from_numpy(image)[None, None], torch.from_numpy(flow).permute(2, 0, 1)[None])[0, 0].numpy()
    inside = expected != 0
    # cv2.remap quantises sub-pixel positions to 1/32: differences of up to ~1/50 of the range
    difference = np.abs(ours - expected)[inside]
    assert difference.max() < 0.02 and difference.mean() < 0.005


def test_upsampled_flow_keeps_its_meaning_in_pixels():
    flow = torch.zeros(1, 2, 8, 10)
    flow[:, 0] = 1.5
    up = upsample_flow(flow, (32, 40))
    assert torch.allclose(up[:, 0], torch.full((1, 32, 40), 6.0)) and not up[:, 1].any()


def test_padding_to_a_multiple():
    padded, size = pad_to_multiple(torch.rand(1, 3, 50, 61))
    assert padded.shape[-2:] == (56, 64) and size == (50, 61)
    padded, size = pad_to_multiple(torch.rand(1, 2, 48, 60), 4)
    assert padded.shape[-2:] == (48, 60) and size == (48, 60)


def test_parameter_count_of_a_block():
    assert parameter_count(ConvNormAct(3, 8)) == 3 * 8 * 3 * 3  # no bias, norms without affine terms
