"""The network against the specification read from the official code (docs/reference/tsjnet.md §1.8-1.10)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tsjnet.model import TINY, TSJNet, TSJNetConfig, count_parameters


def build_on_meta(**options) -> TSJNet:
    with torch.device("meta"):
        return TSJNet(TSJNetConfig(**options))


@pytest.mark.parametrize("options, expected", [
    ({}, 45_065_315),  # dead modules left out: official 45,082,355 - 2 x 8,448 - 2 x 72
    ({"rel_pos_bias": True}, 45_116_015),
    ({"official_layout": True}, 45_082_355),
    ({"official_layout": True, "rel_pos_bias": True}, 45_133_055),
])
def test_parameter_counts(options, expected):
    assert count_parameters(build_on_meta(**options)) == expected


def test_parameter_count_per_part_matches_the_official_tree():
    model = build_on_meta(official_layout=True, rel_pos_bias=True)
    assert count_parameters(model.encoder) == 22_739_465
    assert count_parameters(model.encoder.stem_proj) == 27
    assert count_parameters(model.encoder.trunk) == 743_360
    assert count_parameters(model.encoder.refine) == 1_548_736
    assert count_parameters(model.encoder.nat_branch) == 20_307_494
    assert count_parameters(model.encoder.mfm_branch) == 139_848
    assert count_parameters(model.nat_fuse) == 20_307_494
    assert count_parameters(model.mfm_fuse) == 139_848
    assert count_parameters(model.decoder) == 1_946_248
    nat = model.nat_fuse.nat
    assert count_parameters(nat.tokenizer) == 37_088
    assert [count_parameters(level.blocks) for level in nat.levels] == [126_198, 664_208, 3_958_704, 13_151_440]
    assert [count_parameters(level.downsample) for level in nat.levels[:3]] == [73_984, 295_424, 1_180_672]
    # docs/reference/tsjnet.md lists the head as 810,800, but its own parts (589,952 + 73,792 + 2 x 65,536 + 16,384)
    # and its NAT total (20,307,494) both need 811,200
    assert count_parameters(nat.head) == 811_200


def test_macs_at_480x640():
    """docs/reference/tsjnet.md §1.10: 2,158.9 G true MACs for the official graph, which computes MFM's salient
    3x3 conv twice; computing it once saves 64*64*9*480*640 MACs in each of the three MFM calls."""
    model = build_on_meta().eval()
    image = torch.empty(1, 1, 480, 640, device="meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(image, image)
    duplicated_conv = 3 * 64 * 64 * 9 * 480 * 640
    assert counter.get_total_flops() / 2 == pytest.approx(2158.9e9 - duplicated_conv, rel=2e-4)


def test_forward_shapes_and_ranges():
    torch.manual_seed(0)
    model = TSJNet().eval()
    ir, vi = torch.rand(1, 1, 64, 96), torch.rand(1, 1, 64, 96)
    with torch.no_grad():
        out = model(ir, vi, reconstruct=True)
    assert out.fused.shape == (1, 1, 64, 96) and out.attention.shape == (1, 8, 64, 96)
    assert out.visible_reconstruction.shape == out.infrared_reconstruction.shape == (1, 1, 64, 96)
    assert 0 < out.fused.min() and out.fused.max() < 1
    with torch.no_grad():
        nat, mfm, base = model.encoder(ir)
    assert nat.shape == mfm.shape == base.shape == (1, 64, 64, 96)
    assert 0 <= base.min() and base.max() <= 6  # ReLU6 refinement


def test_sizes_are_checked():
    model = TSJNet(TSJNetConfig(**TINY))
    with pytest.raises(ValueError, match="divisible by 32"):
        model(torch.rand(1, 1, 48, 64), torch.rand(1, 1, 48, 64))
    with pytest.raises(ValueError, match="B x 1 x H x W"):
        model(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64))


def test_every_parameter_learns_and_checkpointing_changes_nothing():
    torch.manual_seed(0)
    model = TSJNet(TSJNetConfig(**TINY, drop_path_rate=0.0, mfm_dropout=0.0))
    ir, vi = torch.rand(2, 1, 64, 64), torch.rand(2, 1, 64, 64)

    def gradients():
        model.zero_grad()
        out = model(ir, vi, reconstruct=True)
        loss = (out.fused - torch.maximum(ir, vi)).abs().mean() + out.attention.mean() \
            + (out.visible_reconstruction - vi).pow(2).mean() + (out.infrared_reconstruction - ir).pow(2).mean()
        loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    plain = gradients()
    assert all(g.abs().sum() > 0 for g in plain.values()), [n for n, g in plain.items() if g.abs().sum() == 0]
    model.set_gradient_checkpointing(True)
    checkpointed = gradients()
    for name in plain:
        assert torch.allclose(plain[name], checkpointed[name], atol=1e-6), name


def test_sum_merge_is_the_papers_decoder_input():
    model = build_on_meta(decoder_merge="sum")
    assert model.decoder.reduce.in_channels == 64
    assert count_parameters(build_on_meta()) - count_parameters(model) == 64 * 32 + 8 * 8  # reduce + SA heads
