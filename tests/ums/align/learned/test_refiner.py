"""The learned cascade: its residual data are exact, it gives ECC's answer back when the refiner
predicts nothing, it composes a residual correctly, it distrusts an inconsistent refiner, it learns,
and the weights the package ships are the ones its model card describes."""

from __future__ import annotations

import hashlib
import re

import cv2
import numpy as np
import pytest
import torch

from ums.align import register
from ums.align.flow import flow_from_transform, identity_grid, warp_with_flow
from ums.align.learned.checkpoint import export_refiner, load_refiner, save_checkpoint
from ums.align.learned.inference import SHIPPED_REFINER
from ums.align.learned.blocks import parameter_count
from ums.align.learned.refiner import ResidualRefiner, consistency_error
from ums.align.learned.residuals import ResidualSampler, invert_field, residual_case, residual_field
from ums.align.learned.train import load_pairs, refiner_losses
from ums.align.registration import refine
from tests.ums.align.learned.conftest import pair_folder  # noqa: F401  (fixture)


def textured(seed: int = 1, shape=(128, 160)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (shape[0] // 6, shape[1] // 6), dtype=np.uint8)
    return cv2.resize(small, shape[::-1], interpolation=cv2.INTER_CUBIC)


class Constant(torch.nn.Module):
    """A stand-in refiner that predicts the same forward and backward flows everywhere."""

    def __init__(self, forward=(0.0, 0.0), backward=(0.0, 0.0)):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the module a device
        self.forward_flow, self.backward_flow = forward, backward

    def forward(self, thermal, visible):
        n, _, h, w = thermal.shape

        def field(value):
            return torch.tensor(value, dtype=torch.float32).view(1, 2, 1, 1).expand(n, 2, h, w).clone()

        return field(self.forward_flow), field(self.backward_flow)


def ecc_pair():
    ir = textured()
    transform = np.array([[1.0, 0.0, 2.5], [0.0, 1.0, -1.5], [0, 0, 1]])  # fixed -> moving
    vi = cv2.warpAffine(cv2.cvtColor(255 - ir, cv2.COLOR_GRAY2BGR), transform[:2], ir.shape[::-1],
                        flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return ir, vi, register(ir, vi, motion="similarity")


def test_a_refiner_that_predicts_zero_gives_eccs_answer_exactly():
    ir, vi, ecc = ecc_pair()
    cascade = refine(ir, vi, ecc, Constant())
    assert np.array_equal(cascade.flow, ecc.flow)
    assert np.array_equal(cascade.transform, ecc.transform)
    assert "ECC's global fit kept" in cascade.details["refinement"]


def test_a_residual_is_composed_after_the_global_fit():
    """x -> T(x + r): with r = (1, 0) everywhere the flow is T's flow after a 1 px shift."""
    ir, vi, ecc = ecc_pair()
    cascade = refine(ir, vi, ecc, Constant(forward=(1.0, 0.0), backward=(-1.0, 0.0)))
    shifted = ecc.transform @ np.array([[1.0, 0, 1.0], [0, 1.0, 0], [0, 0, 1]])
    expected = flow_from_transform(shifted, *ir.shape)
    inside = np.zeros(ir.shape, bool)
    inside[40:-40, 40:-40] = True  # beyond the gate's fade (3 sigma) from the uncovered border
    assert np.abs(cascade.flow[inside] - expected[inside]).max() < 1e-4
    assert cascade.transform is None and cascade.details["global_transform"] == ecc.transform.tolist()


def test_an_inconsistent_refiner_is_not_trusted():
    ir, vi, ecc = ecc_pair()
    cascade = refine(ir, vi, ecc, Constant(forward=(1.0, 0.0), backward=(1.0, 0.0)))  # 2 px round trip
    assert np.array_equal(cascade.flow, ecc.flow)
    assert "not trusted" in cascade.details["refinement"] and cascade.details["consistent"] == 0.0


def test_consistency_error_is_zero_for_inverse_fields_and_the_round_trip_otherwise():
    forward = torch.zeros(1, 2, 32, 32)
    forward[:, 0] = 1.5
    interior = (slice(None), slice(4, -4), slice(4, -4))  # the backward flow is sampled inside the frame
    assert consistency_error(forward, -forward)[interior].abs().max() < 1e-6
    assert torch.allclose(consistency_error(forward, forward)[interior], torch.tensor(3.0))


def test_inverting_a_residual_field_round_trips():
    rng = np.random.default_rng(2)
    for _ in range(5):
        field = residual_field((160, 160), rng)
        inverse = invert_field(field)
        at = identity_grid(160, 160) + field
        back = cv2.remap(inverse, at[..., 0], at[..., 1], cv2.INTER_LINEAR)
        assert np.abs(field + back)[12:-12, 12:-12].max() < 0.05


def test_a_residual_case_puts_the_visible_content_where_its_targets_say():
    """Mono-modal check of the data: the moving image sampled by the forward target is the aligned
    image again; the fixed image sampled by the backward target is the moving one."""
    image = textured(3, (160, 160)).astype(np.float32) / 255
    rgb = np.repeat(image[..., None], 3, axis=2)
    field = residual_field((128, 128), np.random.default_rng(5))
    case = residual_case(image, rgb, np.ones(image.shape, bool), field, origin=(16, 16))
    back = warp_with_flow(case.moving[..., 0], case.forward)
    inside = case.forward_valid.copy()
    inside[:8], inside[-8:], inside[:, :8], inside[:, -8:] = False, False, False, False
    assert np.abs(back - case.fixed)[inside].mean() < 0.01
    forward_again = warp_with_flow(image, case.backward, origin=(16, 16))
    assert np.abs(forward_again - case.moving[..., 0])[case.backward_valid].mean() < 0.01


def test_a_few_cpu_steps_lower_the_refiners_loss(pair_folder):  # noqa: F811
    torch.manual_seed(0)
    sampler = ResidualSampler(load_pairs([pair_folder]), 64, seed=0)
    batch = sampler.batch(4, torch.device("cpu"))
    model = ResidualRefiner(width=0.5)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(40):
        terms = refiner_losses(model, batch)
        optimiser.zero_grad()
        terms["total"].backward()
        optimiser.step()
        history.append(float(terms["epe"].detach()))
    assert np.mean(history[-5:]) < 0.6 * np.mean(history[:5])


def test_exported_weights_load_to_the_same_net(tmp_path):
    model = ResidualRefiner(width=0.5)
    checkpoint = save_checkpoint(model, tmp_path / "r.pt", {"steps": 3})
    shipped = export_refiner(checkpoint, tmp_path / "r.safetensors")
    loaded = load_refiner(shipped)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    assert loaded.config == model.config


def test_the_shipped_refiner_matches_its_model_card():
    card = (SHIPPED_REFINER.parent / "MODEL_CARD.md").read_text()
    digest = hashlib.sha256(SHIPPED_REFINER.read_bytes()).hexdigest()
    assert re.search(r"SHA-256[^0-9a-f]*([0-9a-f]{64})", card).group(1) == digest
    model = load_refiner(SHIPPED_REFINER)
    count = int(re.search(r"Parameters[^0-9]*([0-9,]+)", card).group(1).replace(",", ""))
    assert parameter_count(model) == count
    assert SHIPPED_REFINER.stat().st_size <= 10 * 1024 * 1024
    for licence in ("MSRS", "RoadScene", "LLVIP", "TNO", "M3FD"):
        assert licence in card


def test_the_learned_method_uses_the_shipped_refiner_without_weights():
    ir, vi, _ = ecc_pair()
    if not SHIPPED_REFINER.is_file():
        pytest.fail(f"the package ships no refiner at {SHIPPED_REFINER}")
    registration = register(ir, vi, "learned")
    assert registration.method == "learned" and "refinement" in registration.details


def gaussian_blur_2d(x: torch.Tensor, size: int, sigma: float, mode: str) -> torch.Tensor:
    """Each channel convolved with the normalised 2-D Gaussian of ``size`` taps (the reference)."""
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    taps = torch.exp(-(coords**2) / (2 * sigma**2))
    kernel = (taps[:, None] * taps[None, :]) / taps.sum() ** 2
    channels, pad = x.shape[1], size // 2
    weight = kernel.expand(channels, 1, size, size)
    if mode == "zeros":
        return torch.nn.functional.conv2d(x, weight, padding=pad, groups=channels)
    return torch.nn.functional.conv2d(torch.nn.functional.pad(x, (pad,) * 4, mode=mode), weight, groups=channels)


@pytest.mark.parametrize("sigma, size, mode", [(8.0, None, "zeros"), (2.0, 9, "replicate")])
def test_the_separable_blur_is_the_2d_blur_in_training_and_at_inference(sigma, size, mode):
    """Trained through torch's 1-D convolutions, run through OpenCV's separable filter: the same
    numbers as a 2-D depthwise Gaussian blur, to float rounding."""
    from ums.align.learned.refiner import SeparableBlur

    x = torch.rand(2, 3, 40, 56)
    blur = SeparableBlur(sigma, size, mode)
    reference = gaussian_blur_2d(x, size or 2 * int(3 * sigma) + 1, sigma, mode)
    with torch.enable_grad():
        trained = blur(x)
    with torch.no_grad():
        inferred = blur(x)
    assert torch.allclose(trained, reference, atol=1e-6) and torch.allclose(inferred, reference, atol=1e-6)
