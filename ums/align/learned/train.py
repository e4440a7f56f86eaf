"""``ums align-train``: train the dense matcher on aligned IR/visible pairs with synthetic fields.

Each sample: an aligned pair, one random field u on the full frame (80 % drone-like residuals,
20 % SuperFusion-like, 10 % of all zero: "already aligned -> 0"), fixed = IR warped by u,
moving = the visible image, a joint random crop. Losses (docs/reference/registration.md §5.3, registration only):
Charbonnier end-point error against u, a mono-modal photometric term (the *IR* warped by the
prediction must match the fixed image: same modality, so plain L1 works), and smoothness of the
intermediate fields.

Long runs: ``val_pairs`` are scored every ``val_every`` steps on fixed drone-like warps (the
benchmark's regime and mask), and ``save_every`` writes a training state that ``resume`` continues
from exactly (model, optimiser, schedule, step; every sample is seeded by its step).
"""

from __future__ import annotations

import io
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from ums.align.deformation import DRONE, SUPERFUSION, TRAIN_DRONE, random_field
from ums.align.flow import endpoint_error, scoring_mask, warp_with_flow
from ums.align.learned.checkpoint import (TRAINING_STATE_FORMAT, export_refiner, read_torch, save_checkpoint,
                                          save_torch, training_state_path)
from ums.align.learned.inference import matcher_flow
from ums.align.learned.model import DenseMatcher, Readout, warp
from ums.align.learned.refiner import ResidualRefiner
from ums.align.learned.residuals import ResidualSampler, cases_to_batch, globally_aligned, residual_case, residual_field
from ums.core.atomic import write_bytes, write_text
from ums.core.progress import progress_bar

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


class AlignTrainConfig(BaseModel):
    """Settings of ``ums align-train``."""

    model_config = ConfigDict(extra="forbid")

    pairs: list[Path] = Field(..., min_length=1, description="folders of aligned pairs (ir/ + vi/)")
    out: Path = Field(..., description="checkpoint to write (.pt)")
    model: Literal["dense", "refiner"] = Field("refiner", description="dense: the SuperFusion-style matcher "
                                               "from scratch; refiner: the cascade's residual net after ECC")
    width: float = Field(1.0, gt=0, le=2, description="channel multiplier; 1.0 = the published size")
    spread: float = Field(8.0, ge=0, le=16, description="refiner: sigma (level px) of the confidence-weighted "
                          "averaging of its flows; 0: none")
    readout: Readout = Field("soft-argmax", description="how the flow estimators read their "
                                                      "cost volumes (model.py); regress = the published net")
    crop: int = Field(256, ge=32, multiple_of=8)
    batch: int = Field(16, ge=1)
    steps: int = Field(1000, ge=1)
    learning_rate: float = 1e-3
    weight_decay: float = 1e-5
    grad_clip: float = 5.0
    translation_px: float | None = Field(None, gt=0, description="override the fields' translation range")
    photometric_weight: float = 10.0
    smoothness_weight: float = 0.1
    seed: int = 0
    device: str = "auto"
    val_pairs: list[Path] = Field(default_factory=list, description="folders of held-out aligned pairs to score")
    val_every: int = Field(0, ge=0, description="steps between validations; 0: only after the last step")
    val_fields: int = Field(2, ge=1, description="fixed drone-like warps per validation pair")
    save_every: int = Field(0, ge=0, description="steps between training-state saves; 0: only at the end")
    resume: bool = Field(False, description="continue from the training state beside `out`")
    max_seconds: float | None = Field(None, gt=0, description="stop after this much wall time (state saved; "
                                      "`resume` continues): training in slices on lent machines")
    sampler_threads: int = Field(0, ge=0, description="threads drawing samples; 0: one per core on a GPU, none on CPU")
    show_progress: bool = True

    def run_identity(self) -> dict[str, Any]:
        """What a resumed run must share with the run that wrote the state (``spread`` shapes only the
        refiner; ``readout`` only the dense matcher)."""
        shared = {"pairs", "model", "width", "crop", "batch", "learning_rate", "weight_decay", "translation_px", "seed"}
        return self.model_dump(mode="json", include=shared | ({"spread"} if self.model == "refiner" else {"readout"}))


def load_pairs(folders: list[Path]) -> list[tuple[Path, Path]]:
    pairs = []
    for folder in folders:
        ir_dir, vi_dir = Path(folder) / "ir", Path(folder) / "vi"
        if not ir_dir.is_dir() or not vi_dir.is_dir():
            raise FileNotFoundError(f"align-train: {folder} has no ir/ and vi/ subfolders of aligned pairs")
        visible = {p.stem: p for p in vi_dir.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES}
        pairs += [(p, visible[p.stem]) for p in sorted(ir_dir.iterdir())
                  if p.suffix.lower() in _IMAGE_SUFFIXES and p.stem in visible]
    if not pairs:
        raise FileNotFoundError(f"align-train: no aligned pairs in {', '.join(map(str, folders))}")
    return pairs


def read_pair(ir_path: Path, vi_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Grey uint8 thermal and BGR visible, the visible resized onto the thermal grid if needed."""
    ir = cv2.imread(str(ir_path), cv2.IMREAD_GRAYSCALE)
    vi = cv2.imread(str(vi_path), cv2.IMREAD_COLOR)
    if ir is None or vi is None:
        raise ValueError(f"align-train: cannot read {ir_path} / {vi_path}")
    if vi.shape[:2] != ir.shape:
        vi = cv2.resize(vi, (ir.shape[1], ir.shape[0]), interpolation=cv2.INTER_AREA)
    return ir, vi


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


def losses(model: torch.nn.Module, batch: dict[str, torch.Tensor], config: AlignTrainConfig) -> dict[str, torch.Tensor]:
    if isinstance(model, ResidualRefiner):
        return refiner_losses(model, batch)
    flow, levels = model(batch["fixed"], batch["moving"], return_levels=True)
    truth = batch["truth"]
    epe = torch.sqrt(((flow - truth) ** 2).sum(1) + 1e-3).mean()
    reconstructed = warp(batch["ir"], flow)
    inside = (warp(torch.ones_like(batch["ir"]), truth) > 0.999).float()
    photometric = ((reconstructed - batch["fixed"][:, :1]).abs() * inside).sum() / inside.sum().clamp(min=1)
    smoothness = sum(_gradient_l1(f) for f in levels + [flow]) / (len(levels) + 1)
    total = epe + config.photometric_weight * photometric + config.smoothness_weight * smoothness
    return {"total": total, "epe": epe, "photometric": photometric, "smoothness": smoothness}


def refiner_losses(model: ResidualRefiner, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Charbonnier end-point error of both directions where their targets are defined, and half
    of it again on the 1/4 level (it must find the basin the 1/2 level refines)."""
    forward, backward, (forward_4, backward_4) = model(batch["fixed"], batch["moving"], return_levels=True)

    def epe(flow, target, valid):
        error = torch.sqrt(((flow - target) ** 2).sum(1, keepdim=True) + 1e-3)
        return (error * valid).sum() / valid.sum().clamp(min=1)

    both = epe(forward, batch["forward"], batch["forward_valid"]) + epe(backward, batch["backward"], batch["backward_valid"])
    coarse = (epe(forward_4, batch["forward"], batch["forward_valid"])
              + epe(backward_4, batch["backward"], batch["backward_valid"]))
    return {"total": both + 0.5 * coarse, "epe": both / 2, "coarse": coarse / 2}


def _gradient_l1(flow: torch.Tensor) -> torch.Tensor:
    return (flow[..., 1:, :] - flow[..., :-1, :]).abs().mean() + (flow[..., 1:] - flow[..., :-1]).abs().mean()


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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


class ResidualValidator:
    """Held-out pairs, ECC-aligned, under fixed residual fields (drawn once from their own seed):
    the median over cases of the forward flow's mean EPE where its target is defined."""

    def __init__(self, pairs: list[tuple[Path, Path]], fields: int, seed: int):
        rng = np.random.default_rng([seed, 7])
        self.cases = []
        for ir_path, vi_path in pairs:
            ir, vi = read_pair(ir_path, vi_path)
            material = globally_aligned(ir, vi)
            usable = (ir.shape[0] // 4 * 4, ir.shape[1] // 4 * 4)  # the net's grid: multiples of 4
            self.cases += [residual_case(*material, residual_field(usable, rng)) for _ in range(fields)]

    @torch.no_grad()
    def __call__(self, model: ResidualRefiner) -> dict[str, float]:
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        errors = []
        for case in self.cases:
            batch = cases_to_batch([case], device)
            forward, _ = model(batch["fixed"], batch["moving"])
            error = (forward - batch["forward"]).square().sum(1, keepdim=True).sqrt()
            errors.append(float(error[batch["forward_valid"] > 0].mean()))
        model.train(was_training)
        return {"val_epe_median": float(np.median(errors)), "val_epe_mean": float(np.mean(errors))}


class Run:
    """Everything a training run carries from step to step, and its save/restore."""

    def __init__(self, config: AlignTrainConfig, device: torch.device):
        torch.manual_seed(config.seed)
        self.config = config
        threads = config.sampler_threads or (min(config.batch, os.cpu_count() or 1) if device.type != "cpu" else 1)
        if config.model == "refiner":
            self.sampler = ResidualSampler(load_pairs(config.pairs), config.crop, config.seed)
            self.model = ResidualRefiner(config.width, spread=config.spread).to(device)
        else:
            self.sampler = PairSampler(load_pairs(config.pairs), config.crop, config.seed, config.translation_px, threads)
            self.model = DenseMatcher(config.width, config.readout).to(device)
        self.optimiser = torch.optim.Adam(self.model.parameters(), lr=config.learning_rate,
                                          weight_decay=config.weight_decay)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimiser, self.learning_rate_factor)
        self.step = 0
        self.seconds = 0.0
        self.history: list[dict[str, float]] = []  # one entry per step; validated steps carry val_* keys

    def learning_rate_factor(self, step: int) -> float:
        """Constant, then a linear decay to 0 over the last 20 % of the steps, as the original."""
        steps = self.config.steps
        decay_from = int(0.8 * steps)
        return 1.0 if step < decay_from else max(0.0, (steps - step) / max(1, steps - decay_from))

    def save(self, path: Path) -> Path:
        return save_torch({
            "format": TRAINING_STATE_FORMAT, "version": 1, "identity": json.dumps(self.config.run_identity()),
            "step": self.step, "seconds": self.seconds, "model": self.model.state_dict(),
            "optimiser": self.optimiser.state_dict(), "schedule": self.schedule.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "history": json.dumps(self.history)}, path)

    def restore(self, path: Path) -> None:
        if not path.is_file():
            raise FileNotFoundError(f"align-train --resume: no training state at {path}")
        state = read_torch(path, "align-train --resume")
        if not isinstance(state, dict) or state.get("format") != TRAINING_STATE_FORMAT:
            raise ValueError(f"align-train --resume: {path} is not a training state written by `ums align-train`")
        # states from before the readout and model options were written by the published dense net
        saved = {"readout": "regress", "model": "dense", **json.loads(state["identity"])}
        ours = self.config.run_identity()
        changed = sorted(key for key in ours if saved.get(key) != ours[key])
        if changed:
            raise ValueError(f"align-train --resume: {path} was written with other settings ({', '.join(changed)}); "
                             "resume with the same settings or start a new --out")
        self.model.load_state_dict(state["model"])
        self.optimiser.load_state_dict(state["optimiser"])
        self.schedule.load_state_dict(state["schedule"])
        # the saved rate was set for the saved run's length; a resume may run longer (more --steps)
        for group, base in zip(self.optimiser.param_groups, self.schedule.base_lrs):
            group["lr"] = base * self.learning_rate_factor(int(state["step"]))
        torch.set_rng_state(state["torch_rng"])
        self.step, self.seconds = int(state["step"]), float(state["seconds"])
        self.history = json.loads(state["history"])

    def train_step(self, device: torch.device) -> None:
        terms = losses(self.model, self.sampler.batch(self.config.batch, device, self.step), self.config)
        self.optimiser.zero_grad(set_to_none=True)
        terms["total"].backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimiser.step()
        self.schedule.step()
        self.history.append({"step": self.step, **{k: float(v.detach()) for k, v in terms.items()}})
        self.step += 1


def _due(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


def train_registration(config: AlignTrainConfig) -> list[dict[str, float]]:
    """Train and write the checkpoint (and a loss curve PNG beside it); return the loss history.

    With ``max_seconds`` the run may stop before ``steps``: the checkpoint then holds the weights
    reached so far, and ``resume`` continues the same schedule. Steps that were validated carry
    ``val_epe_median`` / ``val_epe_mean``; the history is also written to ``<out>.history.json``
    and the validations into the checkpoint's ``training`` record.
    """
    device = resolve_device(config.device)
    run = Run(config, device)
    state_path = training_state_path(config.out)
    if config.resume:
        run.restore(state_path)
    validating = ResidualValidator if config.model == "refiner" else Validator
    validator = validating(load_pairs(config.val_pairs), config.val_fields, config.seed) if config.val_pairs else None
    run.model.train()
    steps = progress_bar(range(run.step, config.steps), "align-train", enabled=config.show_progress,
                         total=max(0, config.steps - run.step))
    deadline = None if config.max_seconds is None else time.monotonic() + config.max_seconds
    for _ in steps:
        started = time.perf_counter()
        run.train_step(device)
        run.seconds += time.perf_counter() - started
        last = run.step == config.steps or (deadline is not None and time.monotonic() >= deadline)
        if validator is not None and (last or _due(run.step, config.val_every)):
            run.history[-1].update(seconds=run.seconds, **validator(run.model))
        if last or _due(run.step, config.save_every):
            run.save(state_path)
        if last:
            break
    validations = [h for h in run.history if "val_epe_median" in h]
    save_checkpoint(run.model, config.out, {"steps": run.step, "seconds": run.seconds, "device": str(device),
                                            "final": run.history[-1] if run.history else {},
                                            "validations": validations})
    if isinstance(run.model, ResidualRefiner):  # what the package ships, and `--weights` reads as well
        export_refiner(config.out, Path(config.out).with_suffix(".safetensors"))
    write_text(Path(config.out).with_suffix(".history.json"), json.dumps(run.history))
    _plot_history(run.history, validations, Path(config.out).with_suffix(".loss.png"))
    return run.history


def _plot_history(history: list[dict[str, float]], validations: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5))
    steps = np.array([h["step"] for h in history])
    window = max(1, len(history) // 50)  # per-step losses of random warps are noisy: show their trend
    for key, colour in (("total", "tab:blue"), ("epe", "tab:orange")):
        values = np.array([h[key] for h in history])
        axis.plot(steps, values, color=colour, linewidth=0.5, alpha=0.25)
        trend = np.convolve(values, np.ones(window) / window, mode="valid")
        axis.plot(steps[window - 1:], trend, color=colour, label=f"{key} (mean of {window} steps)")
    if validations:
        axis.plot([v["step"] for v in validations], [v["val_epe_median"] for v in validations], "o-",
                  color="tab:green", label="held-out median EPE (px)")
    axis.set_xlabel("step")
    axis.set_yscale("log")
    axis.legend()
    axis.set_title("align-train loss")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    write_bytes(path, buffer.getvalue())
