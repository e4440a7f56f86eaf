"""``ums align-train``: train the dense matcher on aligned IR/visible pairs with synthetic fields.

Each sample: an aligned pair, one random field u on the full frame (80 % drone-like residuals,
20 % SuperFusion-like, 10 % of all zero: "already aligned -> 0"), fixed = IR warped by u,
moving = the visible image, a joint random crop. Losses (registration.md §5.3, registration only):
Charbonnier end-point error against u, a mono-modal photometric term (the *IR* warped by the
prediction must match the fixed image: same modality, so plain L1 works), and smoothness of the
intermediate fields.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from ums.align.deformation import SUPERFUSION, TRAIN_DRONE, random_field
from ums.align.flow import warp_with_flow
from ums.align.learned.model import DenseMatcher, warp
from ums.atomic import write_bytes, write_text
from ums.progress import progress_bar

CHECKPOINT_FORMAT = "ums-dense-matcher"
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


class AlignTrainConfig(BaseModel):
    """Settings of ``ums align-train``."""

    model_config = ConfigDict(extra="forbid")

    pairs: list[Path] = Field(..., min_length=1, description="folders of aligned pairs (ir/ + vi/)")
    out: Path = Field(..., description="checkpoint to write (.pt)")
    width: float = Field(1.0, gt=0, le=2, description="channel multiplier; 1.0 = the published size")
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
    show_progress: bool = True


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


class PairSampler:
    """Random training samples (fixed, moving, ir, truth) as float32 arrays of one crop size."""

    def __init__(self, pairs: list[tuple[Path, Path]], crop: int, rng: np.random.Generator,
                 translation_px: float | None = None):
        self.crop, self.rng = crop, rng
        self.regimes = [r if translation_px is None else replace(r, translation_px=translation_px)
                        for r in (SUPERFUSION, TRAIN_DRONE)]
        self.images = [self._load(ir, vi) for ir, vi in pairs]

    def _load(self, ir_path: Path, vi_path: Path) -> tuple[np.ndarray, np.ndarray]:
        ir = cv2.imread(str(ir_path), cv2.IMREAD_GRAYSCALE)
        vi = cv2.imread(str(vi_path), cv2.IMREAD_COLOR)
        if ir is None or vi is None:
            raise ValueError(f"align-train: cannot read {ir_path} / {vi_path}")
        vi = cv2.resize(vi, (ir.shape[1], ir.shape[0]), interpolation=cv2.INTER_AREA) if vi.shape[:2] != ir.shape else vi
        short = min(ir.shape)
        if short < self.crop + 16:  # room for the crop inside the warped frame
            scale = (self.crop + 16) / short
            size = (round(ir.shape[1] * scale), round(ir.shape[0] * scale))
            ir, vi = cv2.resize(ir, size), cv2.resize(vi, size)
        return ir.astype(np.float32) / 255, cv2.cvtColor(vi, cv2.COLOR_BGR2RGB).astype(np.float32) / 255

    def sample(self) -> tuple[np.ndarray, ...]:
        ir, vi = self.images[self.rng.integers(len(self.images))]
        if self.rng.random() < 0.5:
            ir, vi = ir[:, ::-1], vi[:, ::-1]
        ir, vi = np.ascontiguousarray(ir), np.ascontiguousarray(vi)
        draw = self.rng.random()
        if draw < 0.1:
            truth = np.zeros(ir.shape + (2,), np.float32)
        else:
            truth = random_field(ir.shape, self.rng, self.regimes[0] if draw < 0.3 else self.regimes[1])
        fixed = warp_with_flow(ir, truth)
        y = self.rng.integers(0, ir.shape[0] - self.crop + 1)
        x = self.rng.integers(0, ir.shape[1] - self.crop + 1)
        window = (slice(y, y + self.crop), slice(x, x + self.crop))
        # the same window on both grids keeps the flow's values: flows are translation-invariant
        return fixed[window], vi[window], ir[window], truth[window]

    def batch(self, size: int, device: torch.device) -> dict[str, torch.Tensor]:
        samples = [self.sample() for _ in range(size)]
        fixed = torch.from_numpy(np.stack([s[0] for s in samples]))[:, None].repeat(1, 3, 1, 1)
        moving = torch.from_numpy(np.stack([s[1] for s in samples])).permute(0, 3, 1, 2)
        ir = torch.from_numpy(np.stack([s[2] for s in samples]))[:, None]
        truth = torch.from_numpy(np.stack([s[3] for s in samples])).permute(0, 3, 1, 2)
        return {k: v.to(device) for k, v in dict(fixed=fixed, moving=moving, ir=ir, truth=truth).items()}


def losses(model: DenseMatcher, batch: dict[str, torch.Tensor], config: AlignTrainConfig) -> dict[str, torch.Tensor]:
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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def train_registration(config: AlignTrainConfig) -> list[dict[str, float]]:
    """Train and write the checkpoint (and a loss curve PNG beside it); return the loss history."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    device = resolve_device(config.device)
    sampler = PairSampler(load_pairs(config.pairs), config.crop, rng, config.translation_px)
    model = DenseMatcher(config.width).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    decay_from = int(0.8 * config.steps)  # linear decay over the last 20 %, as the original
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: 1.0 if step < decay_from else max(0.0, (config.steps - step) / max(1, config.steps - decay_from)))
    history = []
    model.train()
    start = time.perf_counter()
    for step in progress_bar(range(config.steps), "align-train", enabled=config.show_progress):
        terms = losses(model, sampler.batch(config.batch, device), config)
        optimiser.zero_grad(set_to_none=True)
        terms["total"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimiser.step()
        schedule.step()
        history.append({"step": step, **{k: float(v.detach()) for k, v in terms.items()}})
    save_checkpoint(model, config.out, {"steps": config.steps, "seconds": time.perf_counter() - start,
                                        "device": str(device), "final": history[-1]})
    write_text(Path(config.out).with_suffix(".history.json"), json.dumps(history))
    _plot_history(history, Path(config.out).with_suffix(".loss.png"))
    return history


def save_checkpoint(model: DenseMatcher, path: Path, training: dict) -> Path:
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, "version": 1, "config": model.config,
                "training": json.loads(json.dumps(training)), "state_dict": model.state_dict()}, buffer)
    return write_bytes(Path(path), buffer.getvalue())


def load_matcher(path: str | Path | None, device: str | torch.device = "cpu") -> DenseMatcher:
    """The dense matcher saved at ``path`` (``ums align --weights``)."""
    if path is None:
        raise FileNotFoundError("the learned registration needs its weights: pass --weights PATH "
                                "(config key `weights`), a checkpoint written by `ums align-train`")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--weights {path}: no such file (train one with `ums align-train`)")
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling error means "not our checkpoint"
        raise ValueError(f"--weights {path}: not a readable PyTorch checkpoint ({exc})") from exc
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"--weights {path}: not a dense-matcher checkpoint written by `ums align-train`")
    model = DenseMatcher(**checkpoint["config"])
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval()


def _plot_history(history: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5))
    steps = [h["step"] for h in history]
    for key in ("total", "epe"):
        axis.plot(steps, [h[key] for h in history], label=key)
    axis.set_xlabel("step")
    axis.set_yscale("log")
    axis.legend()
    axis.set_title("align-train loss")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    write_bytes(path, buffer.getvalue())
