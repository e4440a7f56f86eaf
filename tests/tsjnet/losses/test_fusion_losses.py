"""The fusion loss terms against their definitions (docs/reference/tsjnet.md §3) and hand-worked values."""

from __future__ import annotations

import pytest
import torch
from skimage.metrics import structural_similarity

from tsjnet.losses import LossConfig, diversity_loss, fusion_terms, gradient_magnitude, ssim_map


def test_sobel_gradient_of_a_ramp():
    ramp = torch.arange(8, dtype=torch.float32).repeat(8, 1)[None, None]  # +1 per column
    inner = gradient_magnitude(ramp)[0, 0, 1:-1, 1:-1]
    assert torch.allclose(inner, torch.full_like(inner, 8.0))  # |[-1 0 1; -2 0 2; -1 0 1] * ramp| = 8


def test_ssim_map_agrees_with_scikit_image_inside_the_border():
    torch.manual_seed(0)
    x = torch.rand(1, 1, 48, 48)
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    _, reference = structural_similarity(x[0, 0].numpy(), y[0, 0].numpy(), data_range=1.0, gaussian_weights=True,
                                         sigma=1.5, use_sample_covariance=False, full=True)
    ours = ssim_map(x, y)[0, 0].numpy()
    assert abs(ours[5:-5, 5:-5] - reference[5:-5, 5:-5]).max() < 1e-4
    assert float(ssim_map(x, x).mean()) == pytest.approx(1.0, abs=1e-5)


def test_diversity_loss_hand_worked():
    one_hot = torch.zeros(1, 8, 2, 2)
    one_hot[:, 3] = 1
    assert float(diversity_loss(one_hot)) == pytest.approx(0 + 1 / 8)
    assert float(diversity_loss(torch.full((1, 8, 2, 2), 0.5))) == pytest.approx(0.5 + 0.5)


def test_code_and_paper_weights():
    torch.manual_seed(0)
    ir, vi = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    fused, attention = torch.maximum(ir, vi), torch.rand(2, 8, 32, 32)
    code = fusion_terms(fused, ir, vi, attention, LossConfig(), vi, ir)
    assert float(code["intensity"]) == 0.0  # F = max(I, V) exactly
    assert float(code["visible_reconstruction"]) == 0.0
    paper_config = LossConfig(preset="paper")
    assert paper_config.infrared_reconstruction == 6 and paper_config.visible_reconstruction == 1
    assert paper_config.detection_terms == ("loss_box_reg", "loss_rpn_box_reg")
    paper = fusion_terms(fused, ir, vi, attention, paper_config, vi * 0, ir)
    assert set(paper) == {"ssim", "diversity", "visible_reconstruction", "infrared_reconstruction"}
    expected_ssim = 1 - 0.5 * (ssim_map(vi, fused).mean() + ssim_map(ir, fused).mean())
    assert float(paper["ssim"]) == pytest.approx(float(expected_ssim), abs=1e-6)
    assert float(paper["visible_reconstruction"]) == pytest.approx(float((vi**2).mean()), abs=1e-6)
    assert LossConfig(preset="paper", ssim=3.0).ssim == 3.0  # explicit values beat the preset


def test_terms_are_fp32_under_half_inputs():
    ir, vi = torch.rand(1, 1, 16, 16).half(), torch.rand(1, 1, 16, 16).half()
    terms = fusion_terms(ir, ir, vi, torch.rand(1, 8, 16, 16).half(), LossConfig())
    assert all(t.dtype == torch.float32 for t in terms.values())
