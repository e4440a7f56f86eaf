from __future__ import annotations

import pytest
import torch

from tsjnet.layers.neighborhood_attention import NeighborhoodAttention2D, neighborhood_attention_2d, window_indices

natten = pytest.importorskip("natten")


@pytest.mark.parametrize("height, width, heads, dilation", [(15, 20, 4, 1), (16, 16, 2, 1), (15, 20, 2, 2), (21, 29, 2, 3)])
def test_matches_natten(height, width, heads, dilation):
    """natten 0.21's own CPU path (Flex) against the gather implementation (docs/reference/tsjnet.md §2.4)."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, height, width, heads, 32) for _ in range(3))
    expected = natten.na2d(q, k, v, kernel_size=7, dilation=dilation)
    ours = neighborhood_attention_2d(q, k, v, kernel_size=7, dilation=dilation)
    assert (ours - expected).abs().max() < 2e-5


def test_border_windows_shift_inward():
    keys, offsets = window_indices(10, 7)
    assert keys[0].tolist() == list(range(0, 7)) and keys[9].tolist() == list(range(3, 10))
    assert keys[5].tolist() == list(range(2, 9))
    # at the first query every key is at or after it: offsets run to +6, hence the 13x13 RPB table
    assert offsets[0].tolist() == list(range(6, 13)) and offsets[5].tolist() == list(range(3, 10))
    dilated, _ = window_indices(15, 7, 2)
    assert dilated[1].tolist() == [1, 3, 5, 7, 9, 11, 13]  # the odd group


def test_rpb_is_added_by_relative_offset():
    torch.manual_seed(1)
    q, k, v = (torch.randn(1, 9, 9, 1, 8) for _ in range(3))
    rpb = torch.zeros(1, 13, 13)
    rpb[0, 6, 6] = 50.0  # a huge bias on offset (0, 0): every query attends to itself
    out = neighborhood_attention_2d(q, k, v, 7, 1, rpb)
    assert torch.allclose(out, v, atol=1e-4)


def test_the_natten_branch_calls_na2d_right(monkeypatch):
    """The branch CUDA takes (natten.na2d, heads-last, our scale and dilation), run here through
    natten's CPU backend: it must give what the gather path gives, and small maps still pad."""
    from tsjnet.layers import neighborhood_attention as na

    torch.manual_seed(3)
    module = NeighborhoodAttention2D(64, 4, kernel_size=7, dilation=2)
    x = torch.randn(2, 15, 19, 64)
    small = torch.randn(1, 5, 9, 64)
    with torch.no_grad():
        gather, gather_small = module(x), module(small)
        calls = []
        original = natten.na2d
        monkeypatch.setattr(na, "NATTEN_DEVICES", {"cpu"})
        monkeypatch.setattr(na, "natten_has_kernels", lambda: True)  # this CPU build has flex only
        monkeypatch.setattr(natten, "na2d", lambda *a, **k: calls.append(k) or original(*a, **k))
        fused = module(x)
        fused_small = module(small)  # 5 x 9 < 14: padded, then natten on the padded map
    assert calls and calls[0]["dilation"] == 2 and calls[0]["scale"] == pytest.approx(16**-0.5)
    assert (fused - gather).abs().max() < 2e-5
    assert (fused_small - gather_small).abs().max() < 2e-5


def test_a_natten_build_without_kernels_is_not_used(monkeypatch):
    from tsjnet.layers import neighborhood_attention as na

    monkeypatch.setattr(na, "NATTEN_DEVICES", {"cpu"})
    monkeypatch.setattr(natten, "HAS_LIBNATTEN", False)
    assert not na._natten_can_run(torch.zeros(1, 16, 16, 8), 7, 1, None)
    monkeypatch.setattr(natten, "HAS_LIBNATTEN", True)
    assert na._natten_can_run(torch.zeros(1, 16, 16, 8), 7, 1, None)
    assert not na._natten_can_run(torch.zeros(1, 6, 16, 8), 7, 1, None)  # smaller than the window


def test_module_matches_natten_module_and_learns():
    torch.manual_seed(2)
    ours = NeighborhoodAttention2D(64, 2, kernel_size=7)
    theirs = natten.NeighborhoodAttention2D(embed_dim=64, num_heads=2, kernel_size=7)
    theirs.load_state_dict(ours.state_dict())  # same parameter names and layout
    x = torch.randn(1, 14, 16, 64)
    with torch.no_grad():  # natten's CPU (Flex) path has no backward
        assert (ours(x) - theirs(x)).abs().max() < 2e-5
    with_rpb = NeighborhoodAttention2D(64, 2, rel_pos_bias=True)
    with_rpb(x).sum().backward()
    assert with_rpb.rpb.grad is not None and with_rpb.rpb.grad.abs().sum() > 0


def test_small_maps_are_refused():
    with pytest.raises(ValueError, match="at least kernel"):
        neighborhood_attention_2d(*(torch.randn(1, 5, 9, 1, 8) for _ in range(3)))
    module = NeighborhoodAttention2D(16, 2, pad_small_maps=False)
    with pytest.raises(ValueError, match="at least kernel"):
        module(torch.randn(1, 5, 9, 16))


def test_small_maps_are_zero_padded_like_natten_014():
    """natten <= 0.15 appended zero tokens bottom/right before qkv: a 4x9 map behaves as the top-left
    of a 7x9 map whose extra rows are zeros, and those zeros (q/k/v = the qkv bias) are attended to."""
    torch.manual_seed(0)
    module = NeighborhoodAttention2D(16, 2, rel_pos_bias=True)
    x = torch.randn(2, 4, 9, 16)
    padded = torch.cat([x, torch.zeros(2, 3, 9, 16)], dim=1)
    small, reference = module(x), module(padded)[:, :4]
    assert small.shape == (2, 4, 9, 16)
    assert torch.allclose(small, reference, atol=1e-6)


def naive_neighborhood_attention(q, k, v, kernel, dilation, rpb):
    """Query by query, straight from the definition (docs/reference/tsjnet.md §2.4): slow, obviously right."""
    batch, height, width, heads, dim = q.shape
    radius = kernel // 2
    out = torch.zeros_like(q)

    def window(i, length):
        group, in_group = i % dilation, i // dilation
        group_length = (length - group + dilation - 1) // dilation
        centre = min(max(in_group, radius), group_length - 1 - radius)
        return [((centre - radius + t) * dilation + group, centre - radius + t - in_group + kernel - 1) for t in range(kernel)]

    for i in range(height):
        for j in range(width):
            keys = [(a, b, oa, ob) for a, oa in window(i, height) for b, ob in window(j, width)]
            rows = torch.tensor([a for a, _, _, _ in keys])
            cols = torch.tensor([b for _, b, _, _ in keys])
            logits = torch.einsum("bnd,bknd->bnk", q[:, i, j] * dim**-0.5, k[:, rows, cols])
            if rpb is not None:
                logits = logits + torch.stack([rpb[:, oa, ob] for _, _, oa, ob in keys], -1)
            out[:, i, j] = torch.einsum("bnk,bknd->bnd", logits.softmax(-1), v[:, rows, cols])
    return out


@pytest.mark.parametrize("dilation, with_rpb", [(1, True), (2, True), (1, False)])
def test_values_and_gradients_equal_the_naive_definition(dilation, with_rpb):
    torch.manual_seed(3)
    shape = (1, 15, 16, 2, 8)
    tensors = [torch.randn(shape, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    rpb = torch.randn(2, 13, 13, dtype=torch.float64, requires_grad=True) if with_rpb else None
    ours = neighborhood_attention_2d(*tensors, 7, dilation, rpb)
    naive = naive_neighborhood_attention(*tensors, 7, dilation, rpb)
    assert (ours - naive).abs().max() < 1e-10
    upstream = torch.randn(shape, dtype=torch.float64)
    inputs = tensors + ([rpb] if with_rpb else [])
    ours_grads = torch.autograd.grad((ours * upstream).sum(), inputs)
    naive_grads = torch.autograd.grad((naive * upstream).sum(), inputs)
    for a, b in zip(ours_grads, naive_grads):
        assert (a - b).abs().max() < 1e-10
