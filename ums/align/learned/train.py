"""``ums align-train``: train the learned cascade's residual refiner on aligned IR/visible pairs.

Each public pair is ECC-aligned once; each sample draws a residual field and resamples the aligned
visible image by its inverse (:mod:`ums.align.learned.residuals`). Loss: the Charbonnier end-point
error of both directions, and half of it again at 1/4.

Long runs: ``val_pairs`` are scored every ``val_every`` steps on fixed residual fields, and
``save_every`` writes a training state that ``resume`` continues from exactly (model, optimiser,
schedule, step; every sample is seeded by its step). The loop takes its net, samples, losses and
score from a :class:`Recipe`, so that research nets (bench/) train through the same run.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from ums.align.learned.checkpoint import (REFINER_FORMAT, TRAINING_STATE_FORMAT, export_refiner, read_torch,
                                          save_checkpoint, save_torch, training_state_path)
from ums.align.learned.refiner import ResidualRefiner
from ums.align.learned.residuals import ResidualSampler, cases_to_batch, globally_aligned, residual_case, residual_field
from ums.core.atomic import write_bytes, write_text
from ums.core.progress import progress_bar

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


class TrainSettings(BaseModel):
    """What every registration net's training run takes: data, schedule, validation, saving."""

    model_config = ConfigDict(extra="forbid")
    # the net a training state belongs to, and the settings a resumed run must share with it
    NET: ClassVar[str] = "refiner"
    IDENTITY: ClassVar[frozenset[str]] = frozenset({"pairs", "width", "crop", "batch", "learning_rate",
                                                     "weight_decay", "seed"})

    pairs: list[Path] = Field(..., min_length=1, description="folders of aligned pairs (ir/ + vi/)")
    out: Path = Field(..., description="checkpoint to write (.pt)")
    width: float = Field(1.0, gt=0, le=2, description="channel multiplier; 1.0 = the shipped size")
    crop: int = Field(256, ge=32, multiple_of=8)
    batch: int = Field(16, ge=1)
    steps: int = Field(1000, ge=1)
    learning_rate: float = 1e-3
    weight_decay: float = 1e-5
    grad_clip: float = 5.0
    seed: int = 0
    device: str = "auto"
    val_pairs: list[Path] = Field(default_factory=list, description="folders of held-out aligned pairs to score")
    val_every: int = Field(0, ge=0, description="steps between validations; 0: only after the last step")
    val_fields: int = Field(2, ge=1, description="fixed warps per validation pair")
    save_every: int = Field(0, ge=0, description="steps between training-state saves; 0: only at the end")
    resume: bool = Field(False, description="continue from the training state beside `out`")
    max_seconds: float | None = Field(None, gt=0, description="stop after this much wall time (state saved; "
                                      "`resume` continues): training in slices on lent machines")
    show_progress: bool = True

    def run_identity(self) -> dict[str, Any]:
        """What a resumed run must share with the run that wrote the state."""
        return {"model": self.NET, **self.model_dump(mode="json", include=set(self.IDENTITY))}

    def saved_identity(self, saved: dict[str, Any]) -> dict[str, Any]:
        """A state's identity with the settings older states did not record filled in."""
        return saved


class AlignTrainConfig(TrainSettings):
    """Settings of ``ums align-train``: the residual refiner."""

    IDENTITY: ClassVar[frozenset[str]] = TrainSettings.IDENTITY | {"spread"}

    spread: float = Field(8.0, ge=0, le=16, description="sigma (level px) of the confidence-weighted "
                          "averaging of its flows; 0: none")


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


def refiner_losses(model: ResidualRefiner, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Charbonnier end-point error of both directions where their targets are defined, and half
    of it again on the 1/4 level (it must find the basin the 1/2 level refines)."""
    forward, backward, (forward_4, backward_4) = model(batch["fixed"], batch["moving"], return_levels=True)

    def epe(flow, target, valid):
        error = torch.sqrt(((flow - target) ** 2).sum(1, keepdim=True) + 1e-3)
        return (error * valid).sum() / valid.sum().clamp(min=1)

    both = (epe(forward, batch["forward"], batch["forward_valid"])
            + epe(backward, batch["backward"], batch["backward_valid"]))
    coarse = (epe(forward_4, batch["forward"], batch["forward_valid"])
              + epe(backward_4, batch["backward"], batch["backward_valid"]))
    return {"total": both + 0.5 * coarse, "epe": both / 2, "coarse": coarse / 2}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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


Losses = Callable[[torch.nn.Module, dict[str, torch.Tensor]], dict[str, torch.Tensor]]
Validation = Callable[[torch.nn.Module], dict[str, float]]


@dataclass
class Recipe:
    """What a training run trains: its net, its samples (``batch(size, device, step)`` -> tensors),
    its losses (a dict with ``total`` and ``epe``), how held-out pairs are scored
    (``validator(pairs, fields, seed)``), the checkpoint kind it writes and what it exports beside it."""

    model: torch.nn.Module
    sampler: Any
    losses: Losses
    validator: Callable[[list[tuple[Path, Path]], int, int], Validation]
    kind: str = REFINER_FORMAT
    export: Callable[[Path], Any] | None = None


def refiner_recipe(config: AlignTrainConfig, device: torch.device) -> Recipe:
    sampler = ResidualSampler(load_pairs(config.pairs), config.crop, config.seed)
    model = ResidualRefiner(config.width, spread=config.spread).to(device)
    # the safetensors file is what the package ships, and `--weights` reads it as well
    return Recipe(model, sampler, refiner_losses, ResidualValidator, REFINER_FORMAT,
                  export=lambda out: export_refiner(out, Path(out).with_suffix(".safetensors")))


RecipeFactory = Callable[[Any, torch.device], Recipe]


class Run:
    """Everything a training run carries from step to step, and its save/restore."""

    def __init__(self, config: TrainSettings, device: torch.device, recipe: RecipeFactory = refiner_recipe):
        torch.manual_seed(config.seed)
        self.config = config
        self.recipe = recipe(config, device)
        self.model, self.sampler = self.recipe.model, self.recipe.sampler
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
        saved = self.config.saved_identity(json.loads(state["identity"]))
        ours = self.config.run_identity()
        if saved.get("model") != ours["model"]:
            raise ValueError(f"align-train --resume: {path} is the training state of another net "
                             f"({saved.get('model', 'unnamed')}, not the {ours['model']}); start a new --out")
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
        terms = self.recipe.losses(self.model, self.sampler.batch(self.config.batch, device, self.step))
        self.optimiser.zero_grad(set_to_none=True)
        terms["total"].backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimiser.step()
        self.schedule.step()
        self.history.append({"step": self.step, **{k: float(v.detach()) for k, v in terms.items()}})
        self.step += 1


def _due(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


def train_registration(config: TrainSettings, recipe: RecipeFactory = refiner_recipe) -> list[dict[str, float]]:
    """Train and write the checkpoint (and a loss curve PNG beside it); return the loss history.

    With ``max_seconds`` the run may stop before ``steps``: the checkpoint then holds the weights
    reached so far, and ``resume`` continues the same schedule. Steps that were validated carry
    ``val_epe_median`` / ``val_epe_mean``; the history is also written to ``<out>.history.json``
    and the validations into the checkpoint's ``training`` record.
    """
    device = resolve_device(config.device)
    run = Run(config, device, recipe)
    state_path = training_state_path(config.out)
    if config.resume:
        run.restore(state_path)
    validator = (run.recipe.validator(load_pairs(config.val_pairs), config.val_fields, config.seed)
                 if config.val_pairs else None)
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
                                            "validations": validations}, run.recipe.kind)
    if run.recipe.export is not None:
        run.recipe.export(config.out)
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
