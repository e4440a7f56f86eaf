"""Research code, not part of the package: training the from-scratch dense matcher
(bench/dense_matcher.py) on aligned IR/visible pairs with synthetic fields, through the package's
training run (``ums.align.learned.train``: schedule, validation, resumable states, time slices).

    python bench/dense_matcher_train.py --pairs DIR --out m.pt [--val-pairs DIR] [--steps 1000] [--batch 16]
        [--crop 256] [--width 1.0] [--readout soft-argmax|regress] [--translation-px PX] [--device auto]
        [--val-every N] [--save-every N] [--max-seconds S] [--resume] [--no-progress]

Each sample: an aligned pair, one random field u on the full frame (80 % drone-like residuals,
20 % SuperFusion-like, 10 % of all zero: "already aligned -> 0"), fixed = IR warped by u,
moving = the visible image, a joint random crop. Losses (docs/reference/registration.md §5.3,
registration only): Charbonnier end-point error against u, a mono-modal photometric term, and
smoothness of the intermediate fields. Held-out pairs are scored on fixed drone-like warps (the
benchmark's regime and mask). The checkpoint is read by bench/registration.py --weights.
"""

from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import torch
from pydantic import Field, ValidationError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dense_matcher import DenseMatcher, Readout, matcher_flow  # noqa: E402  (bench/dense_matcher.py)
from ums.align.deformation import DRONE, SUPERFUSION, TRAIN_DRONE, random_field  # noqa: E402
from ums.align.flow import endpoint_error, scoring_mask, warp_with_flow  # noqa: E402
from ums.align.learned.blocks import warp  # noqa: E402
from ums.align.learned.checkpoint import DENSE_MATCHER_FORMAT  # noqa: E402
from ums.align.learned.train import Recipe, TrainSettings, load_pairs, read_pair, train_registration  # noqa: E402


class DenseTrainConfig(TrainSettings):
    """Settings of a dense-matcher training run."""

    NET: ClassVar[str] = "dense"
    IDENTITY: ClassVar[frozenset[str]] = TrainSettings.IDENTITY | {"readout", "translation_px"}

    readout: Readout = Field("soft-argmax", description="how the flow estimators read their cost volumes "
                             "(bench/dense_matcher.py); regress = the published net")
    translation_px: float | None = Field(None, gt=0, description="override the fields' translation range")
    photometric_weight: float = 10.0
    smoothness_weight: float = 0.1
    sampler_threads: int = Field(0, ge=0, description="threads drawing samples; 0: one per core on a GPU, none on CPU")

    def saved_identity(self, saved: dict[str, Any]) -> dict[str, Any]:
        # states from before the model and readout options were written by the published dense net
        return {"model": "dense", "readout": "regress", **saved}


class PairSampler:
    """Random training samples (fixed, moving, ir, truth) as float32 arrays of one crop size.

    Sample ``index`` of step ``step`` draws from its own generator seeded with (seed, step, index):
    batches do not depend on thread scheduling, and a resumed run needs only its step count.
    """

    def __init__(self, pairs: list[tuple[Path, Path]], crop: int, seed: int = 0,
                 translation_px: float | None = None, threads: int = 0):
        self.crop, self.seed = crop, seed
        self.regimes = [r if translation_px is None else replace(r, translation_px=translation_px)
                        for r in (SUPERFUSION, TRAIN_DRONE)]
        self.images = [self._load(ir, vi) for ir, vi in pairs]
        # OpenCV and numpy release the GIL in remap and the field arithmetic: threads do scale
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="align-train-sampler") if threads > 1 else None

    def _load(self, ir_path: Path, vi_path: Path) -> tuple[np.ndarray, np.ndarray]:
        ir, vi = read_pair(ir_path, vi_path)
        short = min(ir.shape)
        if short < self.crop + 16:  # room for the crop inside the warped frame
            scale = (self.crop + 16) / short
            size = (round(ir.shape[1] * scale), round(ir.shape[0] * scale))
            ir, vi = cv2.resize(ir, size), cv2.resize(vi, size)
        return ir.astype(np.float32) / 255, cv2.cvtColor(vi, cv2.COLOR_BGR2RGB).astype(np.float32) / 255

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        ir, vi = self.images[rng.integers(len(self.images))]
        if rng.random() < 0.5:
            ir, vi = ir[:, ::-1], vi[:, ::-1]
        ir, vi = np.ascontiguousarray(ir), np.ascontiguousarray(vi)
        draw = rng.random()
        if draw < 0.1:
            truth = np.zeros(ir.shape + (2,), np.float32)
        else:
            truth = random_field(ir.shape, rng, self.regimes[0] if draw < 0.3 else self.regimes[1])
        y = rng.integers(0, ir.shape[0] - self.crop + 1)
        x = rng.integers(0, ir.shape[1] - self.crop + 1)
        window = (slice(y, y + self.crop), slice(x, x + self.crop))
        # the same window on both grids keeps the flow's values: flows are translation-invariant
        truth = np.ascontiguousarray(truth[window])
        fixed = warp_with_flow(ir, truth, origin=(int(x), int(y)))
        return fixed, vi[window], ir[window], truth

    def batch(self, size: int, device: torch.device, step: int = 0) -> dict[str, torch.Tensor]:
        generators = [np.random.default_rng([self.seed, step, index]) for index in range(size)]
        samples = list(self.pool.map(self.sample, generators)) if self.pool else [self.sample(g) for g in generators]
        fixed = torch.from_numpy(np.stack([s[0] for s in samples]))[:, None].repeat(1, 3, 1, 1)
        moving = torch.from_numpy(np.stack([s[1] for s in samples])).permute(0, 3, 1, 2)
        ir = torch.from_numpy(np.stack([s[2] for s in samples]))[:, None]
        truth = torch.from_numpy(np.stack([s[3] for s in samples])).permute(0, 3, 1, 2)
        return {k: v.to(device) for k, v in dict(fixed=fixed, moving=moving, ir=ir, truth=truth).items()}


def dense_losses(model: DenseMatcher, batch: dict[str, torch.Tensor],
                 config: DenseTrainConfig) -> dict[str, torch.Tensor]:
    """Charbonnier end-point error against the truth, a mono-modal photometric term (the *IR* warped
    by the prediction must match the fixed image: same modality, so plain L1 works), and smoothness
    of the intermediate fields."""
    flow, levels = model(batch["fixed"], batch["moving"], return_levels=True)
    truth = batch["truth"]
    epe = torch.sqrt(((flow - truth) ** 2).sum(1) + 1e-3).mean()
    reconstructed = warp(batch["ir"], flow)
    inside = (warp(torch.ones_like(batch["ir"]), truth) > 0.999).float()
    photometric = ((reconstructed - batch["fixed"][:, :1]).abs() * inside).sum() / inside.sum().clamp(min=1)
    smoothness = sum(_gradient_l1(f) for f in levels + [flow]) / (len(levels) + 1)
    total = epe + config.photometric_weight * photometric + config.smoothness_weight * smoothness
    return {"total": total, "epe": epe, "photometric": photometric, "smoothness": smoothness}


def _gradient_l1(flow: torch.Tensor) -> torch.Tensor:
    return (flow[..., 1:, :] - flow[..., :-1, :]).abs().mean() + (flow[..., 1:] - flow[..., :-1]).abs().mean()


class Validator:
    """Held-out pairs under fixed drone-like warps (drawn once from their own seed), scored as
    bench/registration.py scores them: per-pair mean EPE over the scoring mask."""

    def __init__(self, pairs: list[tuple[Path, Path]], fields: int, seed: int):
        rng = np.random.default_rng([seed, 7])
        self.cases = []
        for ir_path, vi_path in pairs:
            ir, vi = read_pair(ir_path, vi_path)
            for _ in range(fields):
                truth = random_field(ir.shape, rng, DRONE)
                fixed = warp_with_flow(ir, truth)
                self.cases.append((fixed, vi, truth, scoring_mask(truth, fixed, ir.shape)))

    def __call__(self, model: DenseMatcher) -> dict[str, float]:
        was_training = model.training
        model.eval()
        errors = [endpoint_error(matcher_flow(model, fixed, moving), truth, mask)
                  for fixed, moving, truth, mask in self.cases]
        model.train(was_training)
        return {"val_epe_median": float(np.median(errors)), "val_epe_mean": float(np.mean(errors))}


def dense_recipe(config: DenseTrainConfig, device: torch.device) -> Recipe:
    threads = config.sampler_threads or (min(config.batch, os.cpu_count() or 1) if device.type != "cpu" else 1)
    sampler = PairSampler(load_pairs(config.pairs), config.crop, config.seed, config.translation_px, threads)
    model = DenseMatcher(config.width, config.readout).to(device)
    return Recipe(model, sampler, partial(dense_losses, config=config), Validator, DENSE_MATCHER_FORMAT)


def train_dense(config: DenseTrainConfig) -> list[dict[str, float]]:
    """Train and write the checkpoint, its loss curve and history (``ums.align.learned.train``)."""
    return train_registration(config, dense_recipe)


def parse_config(argv: list[str] | None = None) -> DenseTrainConfig:
    """The command line as a config; options left out keep the config's defaults."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     argument_default=argparse.SUPPRESS)
    parser.add_argument("--pairs", type=Path, action="append", required=True, metavar="DIR",
                        help="folder of aligned pairs (ir/ + vi/); repeatable")
    parser.add_argument("--val-pairs", dest="val_pairs", type=Path, action="append", metavar="DIR",
                        help="held-out aligned pairs to score; repeatable")
    parser.add_argument("--out", type=Path, required=True, metavar="FILE", help="checkpoint to write (.pt)")
    for flag, kind in (("steps", int), ("batch", int), ("crop", int), ("width", float), ("readout", str),
                       ("translation-px", float), ("device", str), ("seed", int), ("learning-rate", float),
                       ("val-every", int), ("val-fields", int), ("save-every", int), ("max-seconds", float),
                       ("sampler-threads", int)):
        name = flag.replace("-", "_")
        parser.add_argument(f"--{flag}", dest=name, type=kind, help=DenseTrainConfig.model_fields[name].description)
    parser.add_argument("--resume", action="store_true", help="continue from the training state beside --out")
    parser.add_argument("--no-progress", dest="show_progress", action="store_false")
    return DenseTrainConfig(**vars(parser.parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    try:
        config = parse_config(argv)
        history = train_dense(config)
    except (ValidationError, ValueError, OSError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    if history:
        print(f"trained to step {len(history)}: end-point error {history[0]['epe']:.2f} -> {history[-1]['epe']:.2f} px")
        if "val_epe_median" in history[-1]:
            print(f"held-out drone-like warps: median EPE {history[-1]['val_epe_median']:.2f} px")
    print(f"wrote {config.out} and {config.out.with_suffix('.loss.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
