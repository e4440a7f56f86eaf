"""``tsjnet fuse``: fuse folders of infrared/visible pairs with TSJNet or a classical baseline.

Clean inference (docs/reference/tsjnet.md §5): the network sees the visible BT.601 luma and the IR at native size,
reflect-padded to a multiple of 32 and cropped back; its sigmoid output, in [0, 1], becomes the
fused luma, recombined with the visible image's own chroma. ``official_compat`` instead reproduces
the released script: 512 x 512 resize, per-image min-max stretch, resize back, truncation.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict

from tsjnet.baselines import BASELINES
from tsjnet.images import ImagePair, merge_luma, pair_folders, read_image, split_luma, to_uint8
from tsjnet.model import TSJNet
from tsjnet.model.checkpoint import load_checkpoint
from ums.core.atomic import write_image
from ums.core.executors import ExecutorSettings
from ums.core.runner import Outcome, StageReport, Task, TaskMap

OFFICIAL_SIZE = 512


class FuseConfig(BaseModel):
    """Settings of ``tsjnet fuse``. Where the batches run (processes or a Dask cluster, GPU workers
    with ``--resources GPU=1``, each loading the model once) is the executor passed beside it."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["tsjnet", "mean", "max", "laplacian"] = "tsjnet"
    weights: Path | None = None
    device: str = "cpu"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    batch_size: int = 1
    official_compat: bool = False
    grey: bool = False  # write the fused luma only, not the colour recombination
    overwrite: bool = False


FUSER_FIELDS = {"method", "weights", "device", "precision", "official_compat"}


@dataclass
class FuseReport:
    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)  # already fused (rerun without --overwrite)
    problems: list[str] = field(default_factory=list)
    incomplete: bool = False  # a worker died: rerunning fuses the rest


class FuseTask(Task):
    """One batch for a worker: up to ``batch_size`` pairs and where their fused images go."""

    pairs: tuple[ImagePair, ...]
    out_dir: Path
    config: FuseConfig


class FusedBatch(BaseModel):
    written: list[Path] = []
    problems: list[str] = []


@dataclass
class LoadedPair:
    pair: ImagePair
    infrared: np.ndarray  # float32 0..255 grey
    luma: np.ndarray
    ycrcb: np.ndarray


def pad_to_multiple(batch: torch.Tensor, multiple: int) -> torch.Tensor:
    height, width = batch.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if not (pad_h or pad_w):
        return batch
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(batch, (0, pad_w, 0, pad_h), mode=mode)


class NetworkFuser:
    """TSJNet on a device, fusing batches of same-size luma/IR images (float32 0..255)."""

    def __init__(self, model: TSJNet, device: str = "cpu", precision: str = "fp32", official_compat: bool = False):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        self.official_compat = official_compat

    def _autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    @torch.no_grad()
    def fuse(self, infrared: Sequence[np.ndarray], luma: Sequence[np.ndarray]) -> list[np.ndarray]:
        height, width = infrared[0].shape
        if self.official_compat:
            infrared = [official_input(image) for image in infrared]
            luma = [official_input(image) for image in luma]
        ir = torch.from_numpy(np.stack(infrared)[:, None] / 255.0).float().to(self.device)
        vi = torch.from_numpy(np.stack(luma)[:, None] / 255.0).float().to(self.device)
        size = ir.shape[-2:]
        multiple = self.model.config.size_multiple
        with self._autocast():
            fused = self.model(pad_to_multiple(ir, multiple), pad_to_multiple(vi, multiple)).fused
        fused = fused[..., :size[0], :size[1]].float().clamp(0, 1).cpu().numpy()[:, 0]
        if self.official_compat:
            return [official_output(image, height, width) for image in fused]
        return [image * 255.0 for image in fused]


def official_input(image: np.ndarray) -> np.ndarray:
    """The released script's preprocessing: rounded luma, bilinear resize to 512 x 512."""
    return cv2.resize(np.rint(image), (OFFICIAL_SIZE, OFFICIAL_SIZE))


def official_output(fused: np.ndarray, height: int, width: int) -> np.ndarray:
    """Per-image min-max stretch to 0..255, bilinear resize back, truncation to integers."""
    span = fused.max() - fused.min()
    stretched = (fused - fused.min()) / span * 255 if span > 0 else np.zeros_like(fused)
    return np.floor(cv2.resize(stretched, (width, height))).astype(np.float32)


def load_pair(pair: ImagePair) -> LoadedPair:
    infrared = read_image(pair.infrared, colour=False)
    luma, ycrcb = split_luma(read_image(pair.visible, colour=True))
    if infrared.shape != luma.shape:
        raise ValueError(f"{pair.infrared} is {infrared.shape[1]}x{infrared.shape[0]} but {pair.visible} is "
                         f"{luma.shape[1]}x{luma.shape[0]}: register the pair first (ums align)")
    return LoadedPair(pair, infrared, luma, ycrcb)


def batches_by_size(pairs: Sequence[LoadedPair], batch_size: int) -> Iterator[list[LoadedPair]]:
    groups: dict[tuple[int, int], list[LoadedPair]] = defaultdict(list)
    for loaded in pairs:
        groups[loaded.infrared.shape].append(loaded)
    for group in groups.values():
        for start in range(0, len(group), batch_size):
            yield group[start:start + batch_size]


def build_fuser(config: FuseConfig):
    """A callable (infrared list, luma list) -> fused luma list; the network is loaded once per process."""
    return _cached_fuser(config.model_dump_json(include=FUSER_FIELDS))


@lru_cache(maxsize=2)
def _cached_fuser(settings_json: str):
    config = FuseConfig.model_validate_json(settings_json)
    if config.method != "tsjnet":
        rule = BASELINES[config.method]
        return lambda infrared, luma: [rule(ir, vi) for ir, vi in zip(infrared, luma)]
    if config.weights is None:
        raise ValueError("method tsjnet needs trained weights: pass --weights PATH.safetensors "
                         "(from `tsjnet train` or `tsjnet convert`), or choose --method mean|max|laplacian")
    model = load_checkpoint(config.weights)
    return NetworkFuser(model, config.device, config.precision, config.official_compat).fuse


def output_path(out_dir: Path, pair: ImagePair) -> Path:
    return out_dir / f"{pair.name}.png"


def fuse_folders(infrared_dir: Path, visible_dir: Path, out_dir: Path, config: FuseConfig | None = None,
                 executor: ExecutorSettings | None = None) -> FuseReport:
    """Fuse every pair of the two folders into ``out_dir/<stem>.png``; rerunning skips done pairs."""
    config = config or FuseConfig()
    out_dir = Path(out_dir)
    pairs, problems = pair_folders(Path(infrared_dir), Path(visible_dir))
    report = FuseReport(problems=[f"fuse: {problem}" for problem in problems])
    todo = []
    for pair in pairs:
        if output_path(out_dir, pair).exists() and not config.overwrite:
            report.skipped.append(output_path(out_dir, pair))
        else:
            todo.append(pair)
    if not todo:
        return report
    build_fuser(config)  # fails here, naming --weights, before any worker starts
    size = max(config.batch_size, 1)
    tasks = [FuseTask(key=todo[start].name, workspace_root=out_dir, file=str(todo[start].infrared),
                      pairs=tuple(todo[start:start + size]), out_dir=out_dir, config=config)
             for start in range(0, len(todo), size)]
    batches = StageReport()

    def record(outcome: Outcome) -> None:
        if outcome.result is None:
            report.problems += [issue.message for issue in outcome.issues]
        else:
            report.written += outcome.result.written
            report.problems += outcome.result.problems

    with TaskMap(executor, "fuse", gpu=config.device.startswith("cuda"), preload=[__name__],
                 retry="rerun `tsjnet fuse`") as batch_map:
        batch_map.map(tasks, fuse_batch, record, f"fuse ({config.method})", batches)
    report.incomplete = batches.incomplete
    report.problems += [f"fuse: {notice}" for notice in batches.notices]
    return report


def fuse_batch(task: FuseTask) -> FusedBatch:
    """Read, fuse and write one batch (runs on a worker); an unreadable pair is a problem, not a stop."""
    config = task.config
    fuser = build_fuser(config)
    result = FusedBatch()
    loaded = []
    for pair in task.pairs:
        try:
            loaded.append(load_pair(pair))
        except ValueError as error:
            result.problems.append(f"fuse: {error}")
    for batch in batches_by_size(loaded, len(task.pairs)):
        fused = fuser([item.infrared for item in batch], [item.luma for item in batch])
        for item, luma in zip(batch, fused):
            image = to_uint8(luma) if config.grey else merge_luma(luma, item.ycrcb)
            result.written.append(write_image(output_path(task.out_dir, item.pair), image, durable=False))
    return result
