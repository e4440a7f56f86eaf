"""The fusion-side loss terms, always evaluated in fp32 (fp16 SSIM loses its E[x^2] - mu^2 to
cancellation: docs/reference/tsjnet.md §6.12). Images are B x 1 x H x W in [0, 1]."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tsjnet.losses.config import LossConfig

SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
SOBEL_Y = torch.tensor([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]])


def gradient_magnitude(image: torch.Tensor) -> torch.Tensor:
    """|I * Kx| + |I * Ky| (cross-correlation, zero padding): the official loss's Sobel."""
    kernels = torch.stack([SOBEL_X, SOBEL_Y]).to(image)[:, None]
    responses = F.conv2d(image, kernels, padding=1)
    return responses.abs().sum(dim=1, keepdim=True)


def gaussian_window(size: int = 11, sigma: float = 1.5, device=None) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32, device=device) - size // 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim_map(x: torch.Tensor, y: torch.Tensor, size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """The pytorch-ssim map (Po-Hsun Su): Gaussian 11/1.5, zero 'same' padding, C1 = .01^2, C2 = .03^2."""
    window = gaussian_window(size, sigma, x.device)
    pad = size // 2

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window, padding=pad)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))


def diversity_loss(attention: torch.Tensor) -> torch.Tensor:
    """mean(1 - max over heads) + mean(attention): one head per pixel towards 1, the rest towards 0."""
    return (1 - attention.max(dim=1).values).mean() + attention.mean()


def fusion_terms(fused: torch.Tensor, infrared: torch.Tensor, visible: torch.Tensor, attention: torch.Tensor,
                 config: LossConfig, visible_reconstruction: torch.Tensor | None = None,
                 infrared_reconstruction: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Each weighted term by name (their sum is the fusion loss)."""
    fused, infrared, visible, attention = (t.float() for t in (fused, infrared, visible, attention))
    terms: dict[str, torch.Tensor] = {}
    grad_f, grad_i, grad_v = gradient_magnitude(fused), gradient_magnitude(infrared), gradient_magnitude(visible)
    if config.intensity:
        terms["intensity"] = config.intensity * (fused - torch.maximum(infrared, visible)).abs().mean()
    if config.gradient:
        terms["gradient"] = config.gradient * (grad_f - torch.maximum(grad_i, grad_v)).abs().mean()
    if config.ssim:
        if config.ssim_weighting == "gradient":
            energy_v, energy_i = grad_v.mean(), grad_i.mean()
            weight_v = (energy_v / (energy_v + energy_i).clamp_min(1e-12)).detach()
        else:
            weight_v = torch.tensor(0.5, device=fused.device)
        similarity = weight_v * ssim_map(visible, fused).mean() + (1 - weight_v) * ssim_map(infrared, fused).mean()
        terms["ssim"] = config.ssim * (1 - similarity)
    if config.diversity:
        terms["diversity"] = config.diversity * diversity_loss(attention)
    if config.visible_reconstruction and visible_reconstruction is not None:
        terms["visible_reconstruction"] = config.visible_reconstruction * F.mse_loss(
            visible_reconstruction.float(), visible)
    if config.infrared_reconstruction and infrared_reconstruction is not None:
        terms["infrared_reconstruction"] = config.infrared_reconstruction * F.mse_loss(
            infrared_reconstruction.float(), infrared)
    return terms
