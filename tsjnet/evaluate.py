"""``tsjnet eval``: every fusion metric per image and its mean over a folder of fused images.

The paper's Table 2 set (SSIM, PSNR, MSE, VIF, CC, CV) plus EN, SD, SF, AG, MI, SCD, Qabf, Nabf.
Images are read as 0..255 grey (colour through BT.601 luma); the convention (``tsjnet``: mean over
the two sources, bits; ``cddfuse``: sums, nats) applies to SSIM, MSE, VIF, CC and MI. PSNR is
per image at peak 255 from the mean MSE of the two sources, averaged over images (docs/reference/metrics.md 2c).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from tsjnet import metrics
from tsjnet.images import match_by_stem, read_image
from tsjnet.metrics.convention import CONVENTIONS, Convention
from ums.core.progress import progress_bar

Metric = Callable[[np.ndarray, np.ndarray, np.ndarray, Convention], float]

METRICS: dict[str, Metric] = {
    "SSIM": lambda f, a, b, c: metrics.ssim(f, a, b, c),
    "PSNR": lambda f, a, b, c: metrics.psnr(f, a, b, c),
    "MSE": lambda f, a, b, c: metrics.mean_squared_error(f, a, b, c),
    "VIF": lambda f, a, b, c: metrics.vif(f, a, b, c),
    "CC": lambda f, a, b, c: metrics.correlation_coefficient(f, a, b, c),
    "CV": lambda f, a, b, c: metrics.chen_varshney(f, a, b),
    "EN": lambda f, a, b, c: metrics.entropy(f, c),
    "SD": lambda f, a, b, c: metrics.standard_deviation(f),
    "SF": lambda f, a, b, c: metrics.spatial_frequency(f),
    "AG": lambda f, a, b, c: metrics.average_gradient(f),
    "MI": lambda f, a, b, c: metrics.mutual_information(f, a, b, c),
    "SCD": lambda f, a, b, c: metrics.sum_of_correlations_of_differences(f, a, b),
    "Qabf": lambda f, a, b, c: metrics.qabf(f, a, b),
    "Nabf": lambda f, a, b, c: metrics.nabf(f, a, b),
}
TABLE2 = ("SSIM", "PSNR", "MSE", "VIF", "CC", "CV")


def evaluate_triplet(fused: np.ndarray, infrared: np.ndarray, visible: np.ndarray, convention: Convention,
                     names: tuple[str, ...] = tuple(METRICS)) -> dict[str, float]:
    return {name: METRICS[name](fused, infrared, visible, convention) for name in names}


def evaluate_folders(infrared_dir: Path, visible_dir: Path, fused_dir: Path, convention: str = "tsjnet",
                     names: tuple[str, ...] = tuple(METRICS), show_progress: bool = True) -> dict:
    """{"per_image": {stem: {metric: value}}, "mean": {metric: value}, "convention": ..., "problems": [...]}"""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; choose one of {sorted(CONVENTIONS)}")
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; available: {', '.join(METRICS)}")
    chosen = CONVENTIONS[convention]
    matched = match_by_stem(Path(fused_dir), Path(infrared_dir), Path(visible_dir))
    problems = [f"eval: {problem}" for problem in matched.problems]
    per_image: dict[str, dict[str, float]] = {}
    for name, paths in progress_bar(list(matched.files.items()), "eval", enabled=show_progress):
        try:
            fused, infrared, visible = (read_image(path, colour=False).astype(np.float64) for path in paths)
            if not fused.shape == infrared.shape == visible.shape:
                raise ValueError(f"{paths[0]}: sizes differ (fused {fused.shape}, infrared {infrared.shape}, "
                                 f"visible {visible.shape})")
        except ValueError as error:
            problems.append(f"eval: {error}")
            continue
        per_image[name] = evaluate_triplet(fused, infrared, visible, chosen, names)
    return {"convention": describe(chosen), "per_image": per_image, "mean": mean_over_images(per_image, names),
            "problems": problems}


def mean_over_images(per_image: dict[str, dict[str, float]], names: tuple[str, ...]) -> dict[str, float]:
    if not per_image:
        return {}
    return {name: float(np.mean([values[name] for values in per_image.values()])) for name in names}


def describe(convention: Convention) -> dict:
    return {"name": convention.name, "two_sources": convention.combine, "data_range": convention.data_range,
            "log_base": "2 (bits)" if convention.log_base == 2 else "e (nats)",
            "psnr": "per image at peak 255 from the mean of the two MSEs, then averaged over images",
            "ssim_window": "11x11 Gaussian, sigma 1.5, valid region"}
