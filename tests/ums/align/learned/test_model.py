from __future__ import annotations

import numpy as np
import torch

from ums.align.deformation import DRONE, random_field
from ums.align.flow import warp_with_flow
from ums.align.learned.model import (DenseMatcher, FlowEstimator, local_correlation, local_ssd_cost, pad_to_multiple,
                                     parameter_count, upsample_flow, warp)


def test_published_size_and_shapes():
    assert parameter_count(DenseMatcher(readout="regress")) == 1_823_688  # docs/reference/registration.md §1.3, block by block
    # the soft-argmax heads read 81 correlation channels instead of 49 SSD ones
    assert parameter_count(DenseMatcher()) == 1_823_688 + 32 * (3 * 3 * (128 // 2) + 3 * 3 * (64 // 2))
    for readout in ("soft-argmax", "regress"):
        tiny = DenseMatcher(width=0.25, readout=readout).eval()
        with torch.no_grad():
            flow = tiny(torch.rand(2, 3, 64, 96), torch.rand(2, 3, 64, 96))
        assert flow.shape == (2, 2, 64, 96)


def test_soft_argmax_readout_follows_the_correlation_peak_untrained():
    """An untrained estimator already points at the shift between two views of one texture: its
    shared features correlate best there and the residual head starts at zero. The softmax's tail
    over the 80 other offsets pulls the estimate slightly towards the window's centre (~0.15 px
    here); training's residual head and the finer levels take that up."""
    torch.manual_seed(0)
    estimator = FlowEstimator(16, 1).eval()
    source = torch.nn.functional.interpolate(torch.randn(1, 16, 24, 24), size=(48, 48), mode="bicubic")
    target = torch.roll(source, shifts=(-2, 3), dims=(2, 3))  # target(p) = source(p + (dx=-3, dy=2))
    with torch.no_grad():
        flow = estimator(source, target)[0, :, 12:36, 12:36]
    assert torch.allclose(flow[0].median(), torch.tensor(-3.0), atol=0.25)
    assert torch.allclose(flow[1].median(), torch.tensor(2.0), atol=0.25)


def test_local_correlation_peaks_at_the_true_offset():
    source = torch.nn.functional.normalize(torch.rand(1, 4, 40, 40) - 0.5, dim=1)
    target = torch.roll(source, shifts=(-3, 1), dims=(2, 3))  # target(p) = source(p + (dy=3, dx=-1))
    correlation = local_correlation(target, source, radius=4)
    offsets = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)]
    assert offsets[correlation[0, :, 8:32, 8:32].mean((1, 2)).argmax()] == (3, -1)


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


def test_cost_volume_is_zero_at_the_true_offset():
    source = torch.rand(1, 4, 40, 40)
    target = torch.roll(source, shifts=(-4, 8), dims=(2, 3))  # target(p) = source(p + (dy=4, dx=-8))
    cost = local_ssd_cost(target, source)
    offsets = [(dy, dx) for dy in range(-12, 13, 4) for dx in range(-12, 13, 4)]
    best = cost[0, :, 14:26, 14:26].mean((1, 2)).argmin()
    assert offsets[best] == (4, -8)


def test_padding_to_a_multiple_of_eight():
    padded, size = pad_to_multiple(torch.rand(1, 3, 50, 61))
    assert padded.shape[-2:] == (56, 64) and size == (50, 61)
