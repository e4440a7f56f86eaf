"""The training loop: TSJNet with its fusion terms and the task networks' losses on the fused image.

Per step: forward (autocast when asked) -> fp32 loss terms -> scaled backward -> unscale -> clip ->
step (the official script clipped the still-scaled gradients: docs/reference/tsjnet.md §6.1). Per epoch: the
plateau scheduler on the epoch's mean loss (averaged over processes), validation with fusion
metrics and a sample image, the weights for ``tsjnet fuse`` and a resumable checkpoint.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from tsjnet import metrics
from tsjnet.data import FusionDataset, collate, discover
from tsjnet.data.dataset import Batch
from tsjnet.data.layout import _split_names
from tsjnet.engine.config import TrainConfig
from tsjnet.engine.distributed import DistributedContext
from tsjnet.engine.run_records import RunRecords
from tsjnet.engine.state import load_state, restore_rng_state, rng_state, save_state
from tsjnet.losses import fusion_terms
from tsjnet.model import TSJNet
from tsjnet.model.checkpoint import save_checkpoint
from tsjnet.task_heads import TaskHeads
from ums.core.atomic import write_image
from ums.core.progress import progress_bar

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Counters:
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    epoch_loss_sum: float = 0.0
    epoch_batches: int = 0


@dataclass
class StepResult:
    total: float
    terms: dict[str, float] = field(default_factory=dict)


def device_type(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name).type


def resolve_device(name: str, context: DistributedContext) -> torch.device:
    device = torch.device(device_type(name) if name == "auto" else name)
    if device.type == "cuda" and context.enabled:
        device = torch.device("cuda", context.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    def __init__(self, config: TrainConfig):
        self.config = config
        self.context = DistributedContext.from_environment(device_type(config.device))
        self.device = resolve_device(config.device, self.context)
        if config.data.root is None:
            raise ValueError("no training data: pass --data PATH (a `ums export --format msrs` folder or MSRS)")
        seed_everything(config.seed)
        self.out = Path(config.out)
        self.train_index = discover(config.data.root, config.data.train_split, config.data.box_view)
        loss = config.loss
        self.tasks = TaskHeads(config.tasks, self.train_index.class_names, use_detector=loss.detection > 0,
                               use_segmenter=loss.segmentation > 0).to(self.device)
        self.train_set = FusionDataset(self.train_index, self.tasks.label_ids, config.data.crop, config.data.augment,
                                       config.seed, config.model.size_multiple, config.data.resize,
                                       config.data.visible_input)
        self.validation_note: str | None = None  # why there is no validation, when a split was asked for
        self.val_set = self._validation_set()
        self.model = TSJNet(config.model).to(self.device)
        self.network = self._wrap(self.model)
        self.task_parameters = [p for p in self.tasks.parameters() if p.requires_grad]
        self.optimizer = self._optimizer()
        self.scaler = torch.amp.GradScaler(self.device.type, init_scale=config.grad_scaler_init,
                                          enabled=config.amp == "fp16")
        self.scheduler = self._scheduler()
        self.counters = Counters()
        self.source_detection: dict[str, float] = {}
        self.checkpoint_path = self.out / "checkpoints" / "last.pt"
        if self.checkpoint_path.is_file():
            self._resume()
        self.records = RunRecords(self.out, self.counters.global_step) if self.context.is_main else None
        if self.validation_note and self.records is not None:
            print(self.validation_note, file=sys.stderr)
            if self.records.writer is not None:
                self.records.writer.add_text("notes/validation", self.validation_note, self.counters.global_step)

    # --- construction ---------------------------------------------------------------------------
    def _validation_set(self) -> FusionDataset | None:
        split, root = self.config.data.val_split, Path(self.config.data.root)
        if split is None:
            return None
        skipped = "validation metrics are skipped"
        # without a list or folder of its own, discover() hands back every pair, training pairs included
        if _split_names(root, split) is None and not ((root / split / "ir").is_dir() and (root / split / "vi").is_dir()):
            self.validation_note = (f"no validation split in {root} (no {split}.txt / Main/{split}.txt / "
                                    f"ImageSets/Main/{split}.txt, no {split}/ir + {split}/vi): {skipped}; "
                                    "`ums split` (then `ums export --format msrs`) makes one")
            return None
        try:
            index = discover(root, split, self.config.data.box_view)
        except FileNotFoundError as error:
            self.validation_note = f"validation split {split!r} unusable ({error}): {skipped}"
            return None
        if index.samples == self.train_index.samples:
            self.validation_note = f"validation split {split!r} of {root} is the training split: {skipped}"
            return None
        return FusionDataset(index, self.tasks.label_ids, None, augment=False, seed=self.config.seed,
                             multiple=self.config.model.size_multiple, resize=self.config.data.resize,
                             visible_input=self.config.data.visible_input)

    def _wrap(self, model: TSJNet):
        network = torch.compile(model) if self.config.compile else model
        if self.context.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            network = DistributedDataParallel(network, device_ids=ids)
        return network

    def _optimizer(self) -> torch.optim.Optimizer:
        optim = self.config.optim
        groups = [{"params": list(self.model.parameters()), "lr": optim.lr}]
        if self.task_parameters:
            groups.append({"params": self.task_parameters, "lr": self.config.tasks.task_lr})
        kind = torch.optim.AdamW if optim.optimizer == "adamw" else torch.optim.Adam
        return kind(groups, betas=optim.betas, weight_decay=optim.weight_decay)

    def _scheduler(self):
        optim = self.config.optim
        if optim.scheduler == "plateau":
            return torch.optim.lr_scheduler.ReduceLROnPlateau(self.optimizer, mode="min", factor=optim.plateau_factor,
                                                              patience=optim.plateau_patience)
        if optim.scheduler == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=max(self.total_steps(), 1))
        return None

    def steps_per_epoch(self) -> int:
        share = math.ceil(len(self.train_set) / self.context.world_size)
        steps = share // self.config.batch_size
        if steps == 0:
            raise ValueError(f"{len(self.train_set)} training pairs cannot fill one batch of {self.config.batch_size} "
                             f"per process ({self.context.world_size} processes)")
        return steps

    def total_steps(self) -> int:
        planned = self.config.epochs * self.steps_per_epoch()
        return min(planned, self.config.max_steps) if self.config.max_steps else planned

    def steps_this_epoch(self) -> int:
        """What is left of the current epoch, cut short by max_steps."""
        remaining = self.steps_per_epoch() - self.counters.step_in_epoch
        if self.config.max_steps:
            remaining = min(remaining, self.config.max_steps - self.counters.global_step)
        return max(remaining, 0)

    def last_epoch(self) -> int:
        return min(self.config.epochs, math.ceil(self.total_steps() / self.steps_per_epoch()))

    # --- checkpoints ----------------------------------------------------------------------------
    def _save(self) -> None:
        if not self.context.is_main:
            return
        save_state(self.checkpoint_path, model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
                   scheduler=self.scheduler.state_dict() if self.scheduler else None,
                   scaler=self.scaler.state_dict(),
                   tasks={n: p.detach().cpu() for n, p in self.tasks.named_parameters() if p.requires_grad},
                   counters=vars(self.counters).copy(), rng=rng_state(),
                   config=self.config.model_dump(mode="json"))
        save_checkpoint(self.model, self.out / "tsjnet.safetensors",
                        metadata={"step": str(self.counters.global_step), "epoch": str(self.counters.epoch)})

    def _resume(self) -> None:
        state = load_state(self.checkpoint_path)
        if state["config"]["model"] != self.config.model.model_dump(mode="json"):
            raise ValueError(f"{self.checkpoint_path} belongs to a run with another model config; "
                             "resume with the same settings or start a new run with another --out")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if state["tasks"]:
            self.tasks.load_state_dict(state["tasks"], strict=False)
        self.counters = Counters(**state["counters"])
        restore_rng_state(state["rng"])

    # --- one step -------------------------------------------------------------------------------
    def _autocast(self, enabled: bool = True):
        if self.config.amp == "none" or not enabled:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=AMP_DTYPES[self.config.amp])

    def _loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        loss = self.config.loss
        with self._autocast():
            out = self.network(batch.infrared, batch.luma, reconstruct=loss.needs_reconstruction)
        terms = fusion_terms(out.fused, batch.infrared, batch.luma, out.attention, loss,
                             out.visible_reconstruction, out.infrared_reconstruction)
        with self._autocast(self.config.tasks.task_amp):
            if self.tasks.detector is not None:
                if "fused" in loss.detection_sources:
                    detection = self.tasks.detection_losses(out.fused, batch.targets, loss.detection_terms)
                    terms["detection"] = loss.detection * sum(detection.values())
                self._log_source_detection(batch)
            if self.tasks.segmenter is not None:
                segmentation = self.tasks.segmentation_loss(out.fused, batch.segmentation)
                if segmentation is not None:
                    terms["segmentation"] = loss.segmentation * segmentation
        return terms

    def _log_source_detection(self, batch: Batch) -> None:
        """The detector on the sources: constants for the fusion net, so logged only, without a graph."""
        self.source_detection = {}
        sources = {"infrared": batch.infrared, "visible": batch.visible}
        for source in (s for s in self.config.loss.detection_sources if s in sources):
            with torch.no_grad():
                losses = self.tasks.detection_losses(sources[source], batch.targets, self.config.loss.detection_terms)
            self.source_detection[f"detection_{source}"] = float(sum(losses.values()))

    def train_step(self, batch: Batch) -> StepResult:
        self.network.train()
        self.tasks.train()
        terms = self._loss_terms(batch.to(self.device))
        total = sum(terms.values())
        if not torch.isfinite(total.detach()) and self.config.amp != "fp16":
            raise FloatingPointError(f"step {self.counters.global_step}: non-finite loss "
                                     f"{ {k: float(v) for k, v in terms.items()} } on {batch.names}")
        self.scaler.scale(total).backward()
        self.context.average_gradients(self.task_parameters)
        clip = self.config.optim.clip_grad_norm
        if clip:
            self.scaler.unscale_(self.optimizer)  # clip what the optimiser will see, not the scaled values
            torch.nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]], clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if isinstance(self.scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
            self.scheduler.step()
        values = {name: float(value.detach()) for name, value in terms.items()}
        values.update(self.source_detection)
        return StepResult(float(total.detach()), values)

    # --- epochs ---------------------------------------------------------------------------------
    def epoch_order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.config.seed * 7919 + epoch)
        order = self.context.shard(torch.randperm(len(self.train_set), generator=generator).tolist())
        usable = self.steps_per_epoch() * self.config.batch_size
        return order[:usable][self.counters.step_in_epoch * self.config.batch_size:]

    def _loader(self, epoch: int):
        self.train_set.set_epoch(epoch)
        return torch.utils.data.DataLoader(self.train_set, batch_size=self.config.batch_size,
                                           sampler=self.epoch_order(epoch), collate_fn=collate,
                                           num_workers=self.config.data.num_workers, drop_last=True,
                                           pin_memory=self.device.type == "cuda", generator=torch.Generator())

    def fit(self) -> Trainer:
        config, counters = self.config, self.counters
        try:
            while counters.epoch < config.epochs and not self._budget_spent():
                steps = self.steps_this_epoch()
                # the bar counts a step only when the loop asks for the next batch, so it must run out
                # by itself at the last step: breaking out of it would leave it one short
                batches = itertools.islice(self._loader(counters.epoch), steps)
                bar = progress_bar(batches, f"epoch {counters.epoch + 1}/{self.last_epoch()}",
                                   enabled=config.show_progress and self.context.is_main, total=steps)
                for batch in bar:
                    started = time.perf_counter()
                    result = self.train_step(batch)
                    counters.step_in_epoch += 1
                    counters.global_step += 1
                    counters.epoch_loss_sum += result.total
                    counters.epoch_batches += 1
                    self._log(result, time.perf_counter() - started)
                    if config.checkpoint_every and counters.global_step % config.checkpoint_every == 0:
                        self._save()
                if counters.step_in_epoch >= self.steps_per_epoch():
                    self._end_epoch()
                else:
                    self._save()  # stopped mid-epoch by max_steps: resumable from here
        finally:
            if self.records is not None:
                self.records.plot_curves()
                self.records.close()
        return self

    def _budget_spent(self) -> bool:
        return bool(self.config.max_steps) and self.counters.global_step >= self.config.max_steps

    def _log(self, result: StepResult, seconds: float) -> None:
        step = self.counters.global_step
        if self.records is None or (step % self.config.log_every and step != 1):
            return
        row = {"step": step, "epoch": self.counters.epoch + 1, "lr": self.optimizer.param_groups[0]["lr"],
               "loss": result.total, **result.terms,
               "samples_per_s": self.config.batch_size * self.context.world_size / max(seconds, 1e-9)}
        self.records.log_step(row)

    def _end_epoch(self) -> None:
        counters = self.counters
        mean_loss = self.context.mean(counters.epoch_loss_sum / max(counters.epoch_batches, 1), self.device)
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(mean_loss)
        counters.epoch += 1
        counters.step_in_epoch, counters.epoch_loss_sum, counters.epoch_batches = 0, 0.0, 0
        if self.val_set is not None and counters.epoch % self.config.val_every == 0 and self.context.is_main:
            self.validate()
        self._save()
        self.context.barrier()

    # --- validation -----------------------------------------------------------------------------
    @torch.no_grad()
    def fuse_samples(self, dataset: FusionDataset, count: int | None = None) -> list[tuple]:
        """(name, IR, luma, fused) as 0..255 float64 arrays at the pairs' own size."""
        self.model.eval()
        results = []
        for position in range(len(dataset) if count is None else min(count, len(dataset))):
            sample = dataset.load(position)
            ir, luma = sample.infrared[None].to(self.device), sample.luma[None].to(self.device)
            with self._autocast():
                fused = self.model(ir, luma).fused.float()
            results.append((sample.name, *(t[0, 0].cpu().double().numpy() * 255 for t in (ir, luma, fused))))
        return results

    def validate(self) -> dict[str, float]:
        fused = self.fuse_samples(self.val_set)
        scores = {"SSIM": [], "VIF": [], "Qabf": [], "EN": []}
        for _, ir, luma, image in fused:
            image = np.round(image)
            scores["SSIM"].append(metrics.ssim(image, ir, luma))
            scores["VIF"].append(metrics.vif(image, ir, luma))
            scores["Qabf"].append(metrics.qabf(image, ir, luma))
            scores["EN"].append(metrics.entropy(image))
        row = {"step": self.counters.global_step, "epoch": self.counters.epoch,
               **{name: float(np.mean(values)) for name, values in scores.items()}}
        self.records.log_validation(row)
        self._write_samples(fused[: self.config.val_images])
        return row

    def _write_samples(self, fused: list[tuple]) -> None:
        rows = [np.concatenate([ir, luma, image], axis=1) for _, ir, luma, image in fused]
        width = max(row.shape[1] for row in rows)
        grid = np.concatenate([np.pad(row, ((0, 4), (0, width - row.shape[1]))) for row in rows])
        image = cv2.cvtColor(np.clip(np.round(grid), 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
        write_image(self.out / "samples" / f"epoch_{self.counters.epoch:03d}.png", image)


def train(config: TrainConfig) -> Trainer:
    trainer = Trainer(config)
    try:
        return trainer.fit()
    finally:
        trainer.context.close()
