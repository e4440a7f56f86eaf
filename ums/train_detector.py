"""``ums train-detector``: a detector trained on the workspace's reviewed labels, to relabel the rest.

The training set is every aligned capture a person has settled (review did not reject it):
- tagged ``reviewed`` in ``ums review``, with its human and reviewed labels (a reviewed capture with no
  box is a negative: nothing of the taxonomy is in it);
- or whose every live label is human or reviewed (``ums labels import --source human``, or every box
  confirmed one by one).
A capture that holds human or reviewed labels beside unreviewed automatic ones is left out: training
on it would teach that the objects its automatic boxes mark are background. Labels rejected or
deleted in review stay out, as in ``ums export``.

The pairs are written through the YOLO export (:func:`ums.export.write_pairs`): both modalities'
images on the aligned thermal grid, one set of labels, in the workspace's splits (``ums split``);
when those give no reviewed capture to train or to validate on, a deterministic hold-out of the
reviewed captures (:func:`ums.split.holdout`) is the val split. Captures in the test split stay out
of training and validation. Class ids and names are the UMS taxonomy's (``labels/ums.yaml``), so
``ums autolabel --detector <run>/best.pt --taxonomy ums --force`` reads the model in that taxonomy.

Everything lands in ``<workspace>/detectors/<run>/``: ``best.pt``, ``last.pt``, ``data.yaml`` and
``dataset/`` (what it trained on), ``captures.json``, ultralytics' plots (``results.png`` ...) and
``MODEL_CARD.md``, written last, which marks the run finished. ``docs/train-detector.md`` is the guide.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ums.core.atomic import write_text
from ums.core.lock import WriterLock, describe_owner
from ums.core.records import LabelRecord
from ums.core.stage_names import ALIGN as ALIGN_STAGE
from ums.core.stage_names import REVIEW as REVIEW_STAGE
from ums.core.workspace import Workspace
from ums.export import PairToExport, split_of, write_pairs
from ums.exporters import yolo_data
from ums.split import SPLITS, holdout
from ums.taxonomy import DATASET_TAXONOMY, load_taxonomy

STAGE = "train-detector"  # its runs in the workspace's run table
DETECTORS = "detectors"  # the folder, beside the stage folders, that holds one folder per run
CARD = "MODEL_CARD.md"  # written last: its presence marks a finished run
DATASET = "dataset"
LOCK = ".train.lock"
MODALITY_FOLDERS = {"both": ["infrared", "visible"], "thermal": ["infrared"], "visible": ["visible"]}
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
AMP_CHECK_WEIGHTS = "yolo26n"  # what ultralytics' mixed-precision check on a GPU loads (ums weights name)
METRICS = {"mAP50": "metrics/mAP50(B)", "mAP50-95": "metrics/mAP50-95(B)",
           "precision": "metrics/precision(B)", "recall": "metrics/recall(B)"}
SHORT_RUN_STEPS = 300  # below this many optimizer steps a run is too short for a warm-up
# Fewer val captures than this cannot tell one epoch from the next: on 4 reviewed captures (1 in val) the
# epoch they chose scored 2.5-4.5 AP@0.5 points below the last one on average, and up to 15 below
# (three seeds; bench/RESULTS.md, "Model in the loop: how much one fine-tune's figure is noise").
MIN_VAL_CAPTURES_TO_CHOOSE = 10
# A first review's few images give a couple of optimizer steps an epoch: 40 epochs on 4 reviewed captures
# (80 steps) gained -6 to +13 AP@0.5 points over the base detector by seed, 120 epochs (240 steps) 17-25 on
# all three seeds (bench/RESULTS.md, "Model in the loop").
MIN_STEPS = 240
ULTRALYTICS_LICENCE = "AGPL-3.0 (ultralytics; models it trains are AGPL-3.0 unless under an Ultralytics licence)"


class TrainDetectorConfig(BaseModel):
    """Settings of ``ums train-detector`` (the one home of its defaults)."""

    model_config = ConfigDict(extra="forbid")

    base: str = Field("yolo11n", description="a `ums weights` name or a local .pt to fine-tune, or an ultralytics "
                                             ".yaml (yolo11n.yaml) to train from scratch")
    epochs: int = Field(30, ge=1, description="epochs at least (more when min_steps asks for them)")
    min_steps: int = Field(MIN_STEPS, ge=0, description="optimizer steps a run takes at least: a small reviewed set gets "
                           "more epochs (4 captures at batch 4: 2 steps an epoch, so 120 epochs); 0: exactly epochs")
    image_size: int = Field(640, ge=32, multiple_of=32, description="training and validation input size (px)")
    batch: int = Field(16, ge=1)
    device: str = Field("cpu", description="cpu, cuda, cuda:1 ...")
    workers: int = Field(0, ge=0, description="dataloader worker processes (0: in the main process, safest on CPU)")
    name: str | None = Field(None, description="the run folder under <workspace>/detectors/ (default: the next "
                                               "train-N; with resume, the latest interrupted run)")
    resume: bool = Field(False, description="continue an interrupted run from its last.pt")
    patience: int = Field(10, ge=0, description="epochs without a better val fitness before stopping (0: never)")
    seed: int = 0
    modalities: Literal["both", "visible", "thermal"] = Field(
        "both", description="which images of each pair to train and validate on")
    split: Literal["auto", "workspace", "holdout"] = Field(
        "auto", description="workspace: the splits of `ums split`; holdout: val_fraction of the reviewed captures; "
                            "auto: the workspace's when they give train and val captures, else holdout")
    val_fraction: float = Field(0.2, gt=0, lt=1, description="the hold-out's share of the reviewed captures")
    amp: bool = Field(True, description="mixed precision on a GPU (ultralytics checks it with the yolo26n weights)")
    nominal_batch: int | None = Field(None, ge=1, description="images per optimizer step (gradients accumulate up "
                                      "to it); null: the batch itself. ultralytics' 64 suits large datasets: on the "
                                      "few dozen images of a first review it would step once in several epochs")
    weights_from: Literal["auto", "best-val", "last-epoch"] = Field(
        "auto", description="which epoch best.pt holds: best-val (the one the val split scores best; patience stops "
                            "early), last-epoch (the final one; val is scored once, at the end); auto: last-epoch while "
                            f"the val split holds fewer than {MIN_VAL_CAPTURES_TO_CHOOSE} captures, too few to tell "
                            "epochs apart, else best-val")
    warmup_epochs: float | None = Field(None, ge=0, description="learning-rate warm-up; null: 3 epochs, none for a "
                                        f"run of fewer than {SHORT_RUN_STEPS} optimizer steps, which ultralytics' "
                                        "warm-up (at least 100 iterations) would take whole")

    @field_validator("name")
    @classmethod
    def _folder_name(cls, value: str | None) -> str | None:
        if value is not None and not RUN_NAME.fullmatch(value):
            raise ValueError(f"run name {value!r}: use letters, digits, '.', '_' and '-' (a folder name, no '/')")
        return value


class TrainDetectorError(ValueError):
    """A run that cannot start as asked; the message is one line naming what to do."""


class RunFinished(TrainDetectorError):
    """The named run finished already: nothing is done."""


@dataclass
class TrainDetectorReport:
    run_dir: Path
    weights: Path  # best.pt
    captures: dict[str, int]  # reviewed captures per split (train, val, test), left-out ones by reason
    classes: dict[int, str]
    metrics: dict[str, float] = field(default_factory=dict)  # on the val split, by the best weights
    epochs: int = 0  # epochs trained (fewer than asked when patience stopped it)
    resumed: bool = False
    notices: list[str] = field(default_factory=list)

    def rows(self) -> list[tuple[str, object]]:
        rows = [("run", self.run_dir), ("weights", self.weights), ("epochs trained", self.epochs)]
        rows += [(f"captures: {key}", value) for key, value in self.captures.items()]
        rows += [(f"val {key}", f"{value:.4f}") for key, value in self.metrics.items()]
        return rows


@dataclass
class TrainingSet:
    pairs: list[PairToExport]
    left_out: dict[str, int]  # why captures are not in it -> how many
    split_rule: str  # how val was chosen, as the card says it


def train_detector(workspace: Workspace, config: TrainDetectorConfig, progress: bool = True) -> TrainDetectorReport:
    """Train (or, with ``resume``, continue) a detector on the reviewed pairs; raises
    :class:`TrainDetectorError` for a run that cannot start, before anything is trained."""
    from ums.core.offline import configure_ultralytics

    configure_ultralytics()
    detectors = workspace.root / DETECTORS
    name = config.name or (_latest_interrupted(detectors) if config.resume else _next_name(detectors))
    run_dir = detectors / name
    _check_state(run_dir, config)  # every refusal comes before anything is written
    device = ultralytics_device(config.device)
    if config.resume:
        model, chosen = _load_model(run_dir / "last.pt", "last.pt"), None
    else:
        model, licence = load_base(config.base)
        with workspace.writing(STAGE):  # the labels read are one state of the workspace
            chosen = select_training_set(workspace, config)
    with _run_lock(run_dir):
        _check_state(run_dir, config)  # another process may have trained it meanwhile
        if chosen is not None:
            _write_dataset(workspace, run_dir, config, chosen, licence)
        return _recorded_training(workspace, model, run_dir, config, device, progress)


def _recorded_training(workspace: Workspace, model, run_dir: Path, config: TrainDetectorConfig, device: str,
                       progress: bool) -> TrainDetectorReport:
    """Train, then write the card; the workspace's run table keeps the settings and the outcome."""
    run_id = workspace.start_run(STAGE, config.model_dump(mode="json") | {"run": str(run_dir)})
    summary: dict[str, str] = {}
    try:
        report = _train(model, run_dir, config, device, progress)
        write_text(run_dir / CARD, model_card(workspace, config, report, _read_captures(run_dir)))
        summary.update({key: str(value) for key, value in report.rows()})
    except BaseException as exc:
        summary["interrupted"] = type(exc).__name__
        raise
    finally:
        workspace.finish_run(run_id, summary)
    return report


# -- the run folder ------------------------------------------------------------------------------
def _next_name(detectors: Path) -> str:
    """``train-N`` one past the highest there: a counter, so names sort and never collide."""
    taken = [int(match.group(1)) for path in detectors.glob("train-*")
             if (match := re.fullmatch(r"train-(\d+)", path.name))]
    return f"train-{max(taken, default=0) + 1}"


def _latest_interrupted(detectors: Path) -> str:
    runs = [path for path in detectors.glob("*") if run_state(path) == "interrupted"]
    if not runs:
        raise TrainDetectorError(f"nothing to resume: no interrupted run in {detectors} (start one without --resume)")
    return max(runs, key=lambda path: (path / "last.pt").stat().st_mtime).name


def run_state(run_dir: Path) -> Literal["new", "interrupted", "finished"]:
    if (run_dir / CARD).is_file():
        return "finished"
    return "interrupted" if (run_dir / "last.pt").is_file() else "new"


def _check_state(run_dir: Path, config: TrainDetectorConfig) -> None:
    state = run_state(run_dir)
    if state == "finished":
        raise RunFinished(f"run {run_dir.name} finished already ({run_dir / 'best.pt'}); nothing to do (choose another "
                          f"--name for a new run, or relabel with `ums autolabel --detector {run_dir / 'best.pt'} "
                          "--taxonomy ums --force`)")
    if config.resume and state == "new":
        raise TrainDetectorError(f"nothing to resume in {run_dir}: it holds no last.pt (start it without --resume)")
    if not config.resume and state == "interrupted":
        raise TrainDetectorError(f"run {run_dir.name} was interrupted ({run_dir / 'last.pt'} is there): pass --resume "
                                 "to continue it, or choose another --name")


@contextmanager
def _run_lock(run_dir: Path):
    """One process trains a run at a time (the workspace's writer lock is held only while the
    dataset is written, so review and autolabel can go on while it trains)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = WriterLock(run_dir / LOCK)
    if not lock.acquire(STAGE):
        raise TrainDetectorError(f"run {run_dir.name} is being trained by {describe_owner(lock.owner())}; wait for it "
                                 "or choose another --name")
    try:
        yield
    finally:
        lock.close()


# -- the base model ------------------------------------------------------------------------------
def load_base(base: str):
    """The ultralytics model to start from, and the licence line of its weights; a one-line
    :class:`TrainDetectorError` for anything else."""
    from ums.weights import resolve_weights

    if base.endswith((".yaml", ".yml")):
        return _load_model(base, "--base"), f"none: trained from scratch on the {base} architecture"
    entry = _registered(base)
    try:
        path = resolve_weights(base, "--base")
    except FileNotFoundError as exc:
        raise TrainDetectorError(str(exc)) from exc
    if not path.is_file():
        raise TrainDetectorError(f"--base {base}: neither a `ums weights` name (`ums weights list`), a local .pt, "
                                 "nor an ultralytics .yaml such as yolo11n.yaml")
    entry = entry or _registered(path.name)
    licence = f"{entry.licence} ({entry.source})" if entry else f"as the publisher of {path.name} states"
    return _load_model(path, "--base"), licence


def _registered(name: str):
    """The `ums weights` entry ``name`` stands for (None for other names); refuses one that is no
    ultralytics detector, before asking for its download."""
    from ums.weights import REGISTRY, UnknownWeights, lookup

    try:
        entry = lookup(name)
    except UnknownWeights:
        return None
    if not entry.source.startswith("ultralytics"):
        detectors = ", ".join(key for key, e in REGISTRY.items() if e.source.startswith("ultralytics"))
        raise TrainDetectorError(f"--base {name}: {entry.purpose}, not an ultralytics detector (one of {detectors})")
    return entry


def _load_model(source: str | Path, flag: str):
    from ultralytics import YOLO

    try:
        model = YOLO(str(source), task="detect")
    except Exception as exc:  # noqa: BLE001 - ultralytics raises many kinds for a file it cannot read
        raise TrainDetectorError(f"{flag} {source}: ultralytics cannot load it ({_first_line(exc)})") from exc
    if model.task != "detect":
        raise TrainDetectorError(f"{flag} {source}: a {model.task} model; a detector is needed (e.g. yolo11n)")
    return model


def ultralytics_device(device: str) -> str:
    """The project's device names (cpu, cuda, cuda:1) as ultralytics takes them, checked against torch."""
    import torch

    if device == "cpu":
        return device
    match = re.fullmatch(r"cuda(?::(\d+))?|(\d+)", device)
    if match is None:
        raise TrainDetectorError(f"--device {device}: use cpu, cuda or cuda:N")
    index = int(match.group(1) or match.group(2) or 0)
    if not torch.cuda.is_available() or index >= torch.cuda.device_count():
        raise TrainDetectorError(f"--device {device}: torch sees {torch.cuda.device_count()} CUDA GPU(s) here "
                                 "(use --device cpu, or another index)")
    return str(index)


# -- the dataset -----------------------------------------------------------------------------------
def select_training_set(workspace: Workspace, config: TrainDetectorConfig) -> TrainingSet:
    """The settled pairs with their human and reviewed labels, in the splits they train in."""
    pairs, left_out = [], {"rejected in review": 0, "partly reviewed": 0}
    for capture, aligned in workspace.captures_with(ALIGN_STAGE):
        tags = (workspace.stage_result(capture.capture_id, REVIEW_STAGE) or {}).get("tags", [])
        if "reject" in tags:
            left_out["rejected in review"] += 1
            continue
        labels = training_labels(workspace.labels(capture.capture_id), "reviewed" in tags)
        if labels is None:
            left_out["partly reviewed"] += sum(label.protected for label in workspace.labels(capture.capture_id)) > 0
            continue
        pairs.append(PairToExport(capture, aligned, labels, split_of(workspace, capture.capture_id)))
    if not pairs:
        raise TrainDetectorError(_no_reviewed_labels(workspace, left_out["partly reviewed"]))
    return TrainingSet(pairs, {k: v for k, v in left_out.items() if v}, _assign_val(pairs, config))


def training_labels(labels: list[LabelRecord], reviewed_capture: bool) -> list[LabelRecord] | None:
    """A settled capture's labels to train on; None for a capture no person has settled."""
    live = [label for label in labels if not label.excluded]
    kept = [label for label in live if label.protected and label.taxonomy == DATASET_TAXONOMY]
    if reviewed_capture or (kept and len(kept) == len(live)):
        return kept
    return None


def _no_reviewed_labels(workspace: Workspace, partly: int) -> str:
    if partly:
        return (f"no capture in {workspace.root} is fully reviewed ({partly} hold reviewed labels beside unreviewed "
                "automatic ones): tag the captures you finished `reviewed` in `ums review`, then run `ums review --sync`")
    if not workspace.captures_with(ALIGN_STAGE):
        return f"no aligned pair in {workspace.root} to train on (run `ums crop` and `ums align` first)"
    return (f"no reviewed labels in {workspace.root} to train on: review captures in `ums review` (tag them reviewed, "
            "then `ums review --sync`), or bring labels in with `ums labels import --source human`")


def _assign_val(pairs: list[PairToExport], config: TrainDetectorConfig) -> str:
    """Set each pair's split; returns how val was chosen."""
    counts = {split: sum(pair.split == split for pair in pairs) for split in SPLITS}
    unsplit_train = sum(pair.split is None for pair in pairs)
    usable = counts["val"] > 0 and counts["train"] + unsplit_train > 0
    if config.split == "workspace" or (config.split == "auto" and usable):
        if not usable:
            raise TrainDetectorError(f"the workspace's splits give {counts['train'] + unsplit_train} reviewed captures "
                                     f"to train on and {counts['val']} to validate on; both must be 1 or more (run "
                                     "`ums split`, review captures of both splits, or pass --split holdout)")
        return "the workspace's val split (`ums split`)"
    candidates = [pair for pair in pairs if pair.split != "test"]
    held = set(holdout([pair.capture.capture_id for pair in candidates], config.val_fraction))
    if not held:
        raise TrainDetectorError(f"{len(candidates)} reviewed capture(s) outside the test split: at least 2 are needed, "
                                 "one to train on and one to validate on (review more captures in `ums review`)")
    for pair in candidates:
        pair.split = "val" if pair.capture.capture_id in held else "train"
    return (f"a hold-out of {len(held)} of the {len(candidates)} reviewed captures outside the test split, spread "
            "evenly over the flight (neighbouring frames are in train, so the metrics are optimistic)")


def _write_dataset(workspace: Workspace, run_dir: Path, config: TrainDetectorConfig, chosen: TrainingSet,
                   licence: str) -> None:
    """The pairs in the YOLO layout under ``dataset/``, ``data.yaml`` naming the chosen modalities'
    folders, and ``captures.json`` (which captures, in which split)."""
    dataset = run_dir / DATASET
    if dataset.exists():  # a run that never got to train: its dataset starts afresh
        shutil.rmtree(dataset)
    pairs = write_pairs(workspace, dataset, "yolo", chosen.pairs)
    write_text(run_dir / "data.yaml", yaml.safe_dump(yolo_data(MODALITY_FOLDERS[config.modalities], f"{DATASET}/"),
                                                     sort_keys=False))
    ids = {split: [pair.capture.capture_id for pair in pairs if pair.split == split] for split in SPLITS}
    record = {"workspace": str(workspace.root.resolve()), "base": config.base, "base_licence": licence,
              "split_rule": chosen.split_rule, "splits": ids, "left_out": chosen.left_out,
              "labels": {split: sum(len(p.labels) for p in pairs if p.split == split) for split in SPLITS}}
    write_text(run_dir / "captures.json", json.dumps(record, indent=1) + "\n")


def _read_captures(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "captures.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TrainDetectorError(f"{run_dir / 'captures.json'} is missing or unreadable, so the run cannot be resumed "
                                 "(start a new run with another --name)") from exc


def capture_counts(record: dict) -> dict[str, int]:
    counts = {split: len(ids) for split, ids in record["splits"].items()}
    return counts | {f"left out ({why})": count for why, count in record.get("left_out", {}).items()}


# -- training --------------------------------------------------------------------------------------
def _train(model, run_dir: Path, config: TrainDetectorConfig, device: str, progress: bool) -> TrainDetectorReport:
    from ultralytics.models.yolo.detect import DetectionTrainer

    class RunFolderTrainer(DetectionTrainer):
        """Keeps best.pt and last.pt in the run folder itself, where `ums autolabel --detector` is pointed."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.wdir = self.save_dir
            self.last, self.best = self.wdir / "last.pt", self.wdir / "best.pt"

    notices: list[str] = []
    record = _read_captures(run_dir)
    nominal_batch = config.nominal_batch or config.batch
    by_val = chosen_by_val(record, config)
    epochs = planned_epochs(record, config)
    if epochs > config.epochs:
        notices.append(f"{epochs} epochs instead of {config.epochs}: the training set gives "
                       f"{_steps_per_epoch(record, config)} optimizer step(s) an epoch, and a run takes at least "
                       f"{config.min_steps} (--min-steps)")
    if not by_val and config.weights_from == "auto":
        notices.append(f"best.pt holds the last epoch: {len(record['splits'].get('val', []))} val capture(s) are too "
                       f"few to choose an epoch by (--weights-from best-val to choose anyway)")
    # without per-epoch validation ultralytics scores only the final epoch, so best.pt is the last one
    arguments = dict(data=str(run_dir / "data.yaml"), epochs=epochs, imgsz=config.image_size,
                     batch=config.batch, nbs=nominal_batch, warmup_epochs=_warmup_epochs(record, config),
                     device=device, workers=config.workers, patience=config.patience if by_val else 0,
                     seed=config.seed, save_dir=str(run_dir), exist_ok=True, plots=True, val=by_val, verbose=False,
                     amp=config.amp and _amp_checkable(device, notices), resume=config.resume)
    with _epoch_progress(model, epochs, progress), _amp_weights_from_ums_home():
        model.train(trainer=RunFolderTrainer, **arguments)
    _remove_empty(run_dir / "weights")  # ultralytics makes it before the trainer moves its weights out
    trainer = model.trainer
    metrics = {key: float(trainer.metrics.get(name, 0.0)) for key, name in METRICS.items()}
    return TrainDetectorReport(run_dir, run_dir / "best.pt", capture_counts(record), load_taxonomy(DATASET_TAXONOMY).names,
                               metrics, trainer.epoch + 1, config.resume, notices)


def chosen_by_val(record: dict, config: TrainDetectorConfig) -> bool:
    """Whether best.pt is the epoch the val split scores best (else the last epoch)."""
    if config.weights_from != "auto":
        return config.weights_from == "best-val"
    return len(record["splits"].get("val", [])) >= MIN_VAL_CAPTURES_TO_CHOOSE


def planned_epochs(record: dict, config: TrainDetectorConfig) -> int:
    """``epochs``, or more where the training set is too small for ``min_steps`` optimizer steps in them."""
    return max(config.epochs, math.ceil(config.min_steps / _steps_per_epoch(record, config)))


def _steps_per_epoch(record: dict, config: TrainDetectorConfig) -> int:
    images = len(record["splits"].get("train", [])) * len(MODALITY_FOLDERS[config.modalities])
    return max(1, math.ceil(images / max(config.batch, config.nominal_batch or config.batch)))


def _warmup_epochs(record: dict, config: TrainDetectorConfig) -> float:
    if config.warmup_epochs is not None:
        return config.warmup_epochs
    steps = planned_epochs(record, config) * _steps_per_epoch(record, config)
    return 0.0 if steps < SHORT_RUN_STEPS else 3.0


def _amp_checkable(device: str, notices: list[str]) -> bool:
    """On a GPU ultralytics checks mixed precision with the yolo26n weights, which it would download;
    without them in UMS_HOME, train in full precision and say how to get them."""
    from ums.weights import present_registered_file

    if device == "cpu" or present_registered_file(AMP_CHECK_WEIGHTS) is not None:
        return True
    notices.append(f"mixed precision off: ultralytics checks it with {AMP_CHECK_WEIGHTS}.pt, which is not in UMS_HOME "
                   f"(`ums weights download {AMP_CHECK_WEIGHTS}` once, then rerun for faster GPU training)")
    return False


@contextmanager
def _amp_weights_from_ums_home():
    """Point ultralytics' AMP check at UMS_HOME, where ``ums weights`` keeps yolo26n.pt (the check
    reads ``ultralytics.utils.WEIGHTS_DIR`` when it runs)."""
    import ultralytics.utils

    from ums.weights import present_registered_file

    found = present_registered_file(AMP_CHECK_WEIGHTS)
    previous = ultralytics.utils.WEIGHTS_DIR
    if found is not None:
        ultralytics.utils.WEIGHTS_DIR = found.parent
    try:
        yield
    finally:
        ultralytics.utils.WEIGHTS_DIR = previous


@contextmanager
def _epoch_progress(model, epochs: int, enabled: bool):
    """One bar of epochs with the latest val mAP50 (ultralytics' own bars are off: ums sets YOLO_VERBOSE=False)."""
    if not enabled:
        yield
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  TextColumn("{task.fields[score]}")) as bar:
        task = bar.add_task("train-detector", total=epochs, score="")

        def on_fit_epoch_end(trainer):
            score = trainer.metrics.get(METRICS["mAP50"])
            bar.update(task, completed=min(trainer.epoch + 1, epochs), total=trainer.epochs,
                       score="" if score is None else f"val mAP50 {float(score):.3f}")

        model.add_callback("on_fit_epoch_end", on_fit_epoch_end)
        try:
            yield
        finally:
            model.clear_callback("on_fit_epoch_end")


def _remove_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass  # absent, or it holds files: nothing of ours to tidy


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


# -- the model card --------------------------------------------------------------------------------
def model_card(workspace: Workspace, config: TrainDetectorConfig, report: TrainDetectorReport, record: dict) -> str:
    """``MODEL_CARD.md``: what the weights are, what they learned from, how well they do on val."""
    from importlib.metadata import version

    classes = "\n".join(f"| {class_id} | {name} |" for class_id, name in report.classes.items())
    splits = "\n".join(f"| {split} | {len(record['splits'][split])} | {record['labels'][split]} |" for split in SPLITS)
    left_out = ", ".join(f"{count} {why}" for why, count in record.get("left_out", {}).items()) or "none"
    metrics = "\n".join(f"| {key} | {value:.4f} |" for key, value in report.metrics.items())
    notices = "".join(f"\n- {notice}" for notice in report.notices)
    by_val = chosen_by_val(record, config)
    best = "the epoch with the best val fitness" if by_val else "the last epoch: too few val captures to choose one by"
    stopping = f"patience {config.patience}" if by_val else "no early stop: val scored at the end"
    return f"""# Detector {report.run_dir.name}

An ultralytics YOLO detector trained by `ums train-detector` on the reviewed labels of the workspace
`{record['workspace']}`, in the UMS taxonomy (`labels/ums.yaml`). Relabel the captures nobody has
reviewed with it (human and reviewed labels stay untouched):

    ums autolabel --workspace {workspace.root} --detector {report.weights} --taxonomy ums --force

## Weights
- `best.pt` ({best}; use this one), `last.pt` (the last epoch)
- base: `{config.base}`; licence of the base weights: {record['base_licence']}
- code licence of the trainer: {ULTRALYTICS_LICENCE}
- trained: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; ums {version('ums-tsjnet')}, ultralytics
  {version('ultralytics')}, torch {version('torch')}

## Training
- epochs: {report.epochs} of {planned_epochs(record, config)} ({stopping}){' - resumed' if report.resumed else ''};
  image size {config.image_size}; batch {config.batch}; device {config.device}; seed {config.seed}
- modalities: {config.modalities} (aligned visible and thermal images on the thermal grid, one set of labels)
- val split: {record['split_rule']}
- the dataset as trained: `data.yaml`, `dataset/`; which captures: `captures.json`

| split | captures | labels |
| --- | ---: | ---: |
{splits}

Left out: {left_out}. Only human and reviewed labels are trained on; a reviewed capture without a box
teaches what background looks like. The test split is never trained or validated on.

## Classes

| id | name |
| --- | --- |
{classes}

## Metrics on the val split (best.pt)

| metric | value |
| --- | ---: |
{metrics}

Curves and plots: `results.png`, `results.csv`, the precision-recall and confusion-matrix images.
{notices}
"""
