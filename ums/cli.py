"""The ``ums`` command: a thin shell over the stage functions (each importable on its own)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import ums  # noqa: F401  (applies the offline settings before anything else is imported)
from ums.cli_options import (
    CliGroup,
    CliTyper,
    ExecutorOption,
    DashboardOption,
    SchedulerFileOption,
    SchedulerOption,
    WorkersOption,
    choice_option,
    config_default,
    config_option,
    device_problem,
    error_text,
    executor_overrides,
    fail,
    interrupted,
    print_error,
    shown,
    version_option,
)
from ums.core.config import ConfigError, default_config_path, load_config, load_stage_config
from ums.core.workspace import Workspace, WorkspaceError

app = CliTyper(
    name="ums",
    cls=CliGroup,
    help="Build registered, labelled IR/visible datasets from DJI M30T flights.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,  # help text is text: "[default: ...]" and "class:car:" are not markup
)
console = Console(stderr=True, soft_wrap=True)

WorkspaceOption = typer.Option(
    None, "--workspace", "-w", envvar="UMS_WORKSPACE", metavar="DIR",
    help="Workspace folder [default: ./ums-workspace].",
)
ProgressOption = typer.Option(True, help="Show a progress bar.")
# what each stage needs done first: named when a run finds nothing to do
PREVIOUS_STAGE = {"crop": "ums ingest", "align": "ums crop", "autolabel": "ums align", "queue": "ums align"}


@app.callback()
def main(version: bool = version_option("ums", ums.__version__)) -> None:
    """Build registered, labelled IR/visible datasets from DJI M30T flights."""


def _finish(report, stage: str) -> None:
    """Print what the run could not do. Exit 0 when every planned task is done or skipped; exit 1,
    with one line of the real counts, when any failed or was not run, or when there was nothing to do."""
    if getattr(report, "planned", None) != 0:  # with nothing planned, the error line says it
        for notice in report.notices:
            console.print(f"[yellow]{escape(notice)}[/yellow]")
    shortfall = _shortfall(report, stage)
    if shortfall:
        fail(shortfall, 1)


def _shortfall(report, stage: str) -> str | None:
    planned = getattr(report, "planned", None)
    failed, not_run = getattr(report, "failed", 0), getattr(report, "not_run", 0)
    if planned == 0:
        before = PREVIOUS_STAGE.get(stage)
        return f"nothing to {stage}: no capture is ready for it" + (f" (run `{before}` first)" if before else "")
    if failed and not_run:
        return (f"{failed} of {planned} {stage} tasks failed and {not_run} were not run (`ums status --issues` lists why; "
                f"rerun `ums {stage}` to retry and resume them)")
    if failed:
        counted = f"all {planned}" if failed == planned else f"{failed} of {planned}"
        return f"{counted} {stage} tasks failed (`ums status --issues` lists why; rerun `ums {stage}` to retry them)"
    if not_run:
        return f"{not_run} of {planned} {stage} tasks were not run (rerun `ums {stage}` to resume)"
    if report.incomplete:
        return f"{stage} did not finish (rerun `ums {stage}` to resume)"
    return None


def _check_devices(settings, executor, stage: str) -> None:
    """A device this machine lacks fails now, before the run starts. A Dask cluster's workers may
    have GPUs this machine lacks, so there the workers decide; ECC runs on the CPU whatever is set."""
    if executor.executor == "dask" or (stage == "align" and settings.method != "learned"):
        return
    for key, device in _devices(settings):
        problem = device_problem(device)
        if problem:
            fail(problem if key == "device" else f"{problem.removesuffix(')')}; setting {key})")


def _devices(settings, prefix: str = "") -> list[tuple[str, str]]:
    """Every ``device`` setting, nested ones included (autolabel: detector.device, sam.device)."""
    from pydantic import BaseModel

    found = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if name == "device" and isinstance(value, str):
            found.append((prefix + name, value))
        elif isinstance(value, BaseModel):
            found += _devices(value, f"{prefix}{name}.")
    return found


def _table(title: str, rows: list[tuple[str, object]]) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    for key, value in rows:
        table.add_row(key, str(value))
    return table


@app.command()
def ingest(
    flight_dir: Path = typer.Argument(..., help="A flight folder: an SD card's DCIM or any folder below it."),
    workspace: Optional[Path] = WorkspaceOption,
    config: Optional[Path] = config_option("ingest"),
    progress: bool = ProgressOption,
    max_issues: int = typer.Option(20, min=0, help="Issues to print (all are recorded)."),
    workers: Optional[int] = WorkersOption,
    executor: Optional[str] = ExecutorOption,
    scheduler: Optional[str] = SchedulerOption,
    scheduler_file: Optional[Path] = SchedulerFileOption,
    dashboard: bool = DashboardOption,
) -> None:
    """Find DJI captures, pair their frames, read EXIF + drone-dji XMP, extract raw thermal."""
    from ums.ingest import IngestConfig, NothingToIngest, check_flight, ingest_flight
    from ums.core.executors import ExecutorError

    try:
        settings, where = _stage_settings("ingest", IngestConfig, config, progress,
                                          executor_overrides(workers, executor, scheduler, scheduler_file, dashboard))
        check_flight(flight_dir)  # before Workspace.open creates the workspace: a run that finds nothing leaves none
        with Workspace.open(workspace) as ws:
            report = ingest_flight(ws, flight_dir, settings, where)
    except (ConfigError, OSError, NothingToIngest, WorkspaceError, ExecutorError) as exc:
        fail(exc)
    except KeyboardInterrupt:
        interrupted("ingest")
    console.print(_table(f"ingest {report.flight_root}", report.rows()))
    _issue_lines(report.issues, max_issues)
    _finish(report, "ingest")


@app.command()
def status(
    workspace: Optional[Path] = WorkspaceOption,
    issues: bool = typer.Option(False, "--issues", help="List every recorded issue."),
) -> None:
    """Counts per stage and the issues recorded in the workspace."""
    from ums.report import summarize

    try:
        with Workspace.open(workspace, create=False) as ws:
            summary = summarize(ws)
    except (WorkspaceError, OSError) as exc:
        fail(exc)
    Console().print(_table("ums status", summary.rows()))
    if issues:
        for issue in summary.issues:
            print(f"{issue.level}\t{issue.describe()}")


@app.command()
def manifest(
    workspace: Optional[Path] = WorkspaceOption,
    json_lines: bool = typer.Option(False, "--json", help="One JSON object per capture per line."),
    redact: bool = typer.Option(False, help="Drop GPS and laser-range-finder positions, serial numbers and absolute paths."),
) -> None:
    """The captures of the workspace (the JSON form is a stable, documented interface)."""
    from ums.manifest import manifest_lines, manifest_records

    try:
        with Workspace.open(workspace, create=False) as ws:
            if json_lines:
                for line in manifest_lines(ws, redact):
                    sys.stdout.write(line + "\n")
                return
            table = Table("capture", "time", "frames", "raw thermal", "issues")
            for record in manifest_records(ws, redact):
                raw = record["thermal_raw"]
                table.add_row(record["capture_id"], record["timestamp"] or "-",
                              " ".join(sorted(record["frames"])),
                              "x".join(map(str, raw["shape"])) if raw else "-", str(len(record["issues"])))
    except (WorkspaceError, OSError) as exc:
        fail(exc)
    Console().print(table)


def _issue_lines(issues, limit: int) -> None:
    by_severity = sorted(issues, key=lambda i: ("error", "warning", "info").index(i.level))
    for issue in by_severity[:limit]:
        colour = "red" if issue.level == "error" else "yellow"
        console.print(f"[{colour}]{issue.level}[/{colour}] {escape(issue.describe())}")
    if len(issues) > limit:
        console.print(f"... and {len(issues) - limit} more: `ums status --issues`")


def _stage_settings(stage: str, config_model, config: Optional[Path], progress: bool, executor: dict, **overrides):
    """A stage's settings from its YAML (or --config) and the overrides given, and beside them where
    it runs: the file's ``executor:`` section under the executor options. A bar is drawn on a terminal only."""
    executor = {**executor, "show_progress": None if progress and sys.stderr.isatty() else False}
    return load_stage_config(config_model, config or default_config_path(stage), executor, **overrides)


def _run_workspace_stage(stage: str, config_model, run, workspace: Optional[Path], config: Optional[Path],
                         progress: bool, executor: dict, **overrides) -> None:
    """Load a stage's config, run it on an existing workspace, print its table and issues."""
    from ums.core.executors import ExecutorError

    try:
        settings, where = _stage_settings(stage, config_model, config, progress, executor, **overrides)
        _check_devices(settings, where, stage)
        with Workspace.open(workspace, create=False) as ws:
            report = run(ws, settings, where)
    except (ConfigError, OSError, ValueError, WorkspaceError, ExecutorError) as exc:
        fail(exc)
    except KeyboardInterrupt:
        interrupted(stage)
    console.print(_table(f"ums {stage}", report.rows()))
    _issue_lines(report.issues or [], 20)
    _finish(report, stage)


@app.command()
def crop(
    workspace: Optional[Path] = WorkspaceOption,
    config: Optional[Path] = config_option("crop"),
    size: Optional[str] = typer.Option(None, metavar="WxH", help=shown(
        "Output size on the thermal grid, e.g. 1280x1024.",
        f"{config_default('crop', 'output_width')}x{config_default('crop', 'output_height')}")),
    progress: bool = ProgressOption,
    workers: Optional[int] = WorkersOption,
    executor: Optional[str] = ExecutorOption,
    scheduler: Optional[str] = SchedulerOption,
    scheduler_file: Optional[Path] = SchedulerFileOption,
    dashboard: bool = DashboardOption,
) -> None:
    """Resample each visible frame onto the thermal grid from the cameras' geometry."""
    from ums.crop import CropConfig, crop_workspace

    width = height = None
    if size:
        try:
            width, height = (int(v) for v in size.lower().split("x"))
        except ValueError:
            fail(f"--size {size!r} is no size (write WIDTHxHEIGHT, e.g. --size 640x512)")
    _run_workspace_stage("crop", CropConfig, crop_workspace, workspace, config, progress,
                         executor_overrides(workers, executor, scheduler, scheduler_file, dashboard),
                         output_width=width, output_height=height)


@app.command()
def align(
    workspace: Optional[Path] = WorkspaceOption,
    config: Optional[Path] = config_option("align"),
    method: Optional[str] = choice_option("ums.align.stage:AlignConfig.method", "ecc (classical) or learned (ECC, then "
                                          "the residual net).", shown_default=config_default("align", "method")),
    motion: Optional[str] = choice_option("ums.align.stage:AlignConfig.motion", "ECC's global motion model.",
                                          shown_default=config_default("align", "motion")),
    weights: Optional[Path] = typer.Option(None, metavar="FILE", help=shown(
        "Checkpoint of the learned method (from `ums align-train`).", config_default("align", "weights") + ": the net shipped with ums")),
    device: Optional[str] = typer.Option(None, metavar="DEVICE", help=shown(
        "Device of the learned method: cpu, cuda, cuda:1 ...", config_default("align", "device"))),
    progress: bool = ProgressOption,
    workers: Optional[int] = WorkersOption,
    executor: Optional[str] = ExecutorOption,
    scheduler: Optional[str] = SchedulerOption,
    scheduler_file: Optional[Path] = SchedulerFileOption,
    dashboard: bool = DashboardOption,
) -> None:
    """Register each cropped pair (ECC on gradients, or the learned net) with a per-flight rig offset as fallback."""
    from ums.align.stage import AlignConfig, align_workspace

    _run_workspace_stage("align", AlignConfig, align_workspace, workspace, config, progress,
                         executor_overrides(workers, executor, scheduler, scheduler_file, dashboard),
                         method=method, motion=motion, weights=weights, device=device)


@app.command("align-train")
def align_train(
    pairs: list[Path] = typer.Option(..., "--pairs", metavar="DIR", help="Folder of aligned pairs (ir/ + vi/); repeatable."),
    out: Path = typer.Option(..., metavar="FILE", help="Checkpoint to write (.pt); a .loss.png curve is written beside it."),
    steps: int = typer.Option(1000, help="Optimiser steps."),
    batch: int = typer.Option(16, help="Pairs per step."),
    crop: int = typer.Option(256, help="Training crop size (multiple of 8)."),
    width: float = typer.Option(1.0, help="Channel multiplier: 1.0 is the shipped refiner's size."),
    spread: float = typer.Option(8.0, help="Sigma (level px) of the confidence-weighted averaging of the refiner's flows; 0: none."),
    device: str = typer.Option("auto", metavar="DEVICE", help="auto, cpu, cuda ..."),
    seed: int = typer.Option(0, help="Random seed of the warps, crops and initial weights."),
    val_pairs: Optional[list[Path]] = typer.Option(None, "--val-pairs", metavar="DIR",
                                                   help=shown("Held-out aligned pairs to score; repeatable.", "none")),
    val_every: int = typer.Option(0, help="Steps between validations (0: after the last step only)."),
    save_every: int = typer.Option(0, help="Steps between resumable training-state saves (0: at the end)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the training state beside --out."),
    max_seconds: Optional[float] = typer.Option(None, help=shown("Stop after this much wall time; --resume continues.", "no limit")),
    progress: bool = ProgressOption,
) -> None:
    """Train the learned cascade's residual refiner on synthetic residual fields of aligned pairs."""
    from ums.align.learned.train import AlignTrainConfig, train_registration

    problem = device_problem(device)
    if problem:
        fail(problem)
    try:
        settings = load_config(AlignTrainConfig, None, pairs=pairs, out=out, steps=steps, batch=batch, crop=crop,
                               width=width, spread=spread, device=device, seed=seed, val_pairs=val_pairs or [],
                               val_every=val_every, save_every=save_every, resume=resume, max_seconds=max_seconds,
                               show_progress=progress and sys.stderr.isatty())
        history = train_registration(settings)
    except (ValueError, OSError) as exc:
        fail(exc)
    except KeyboardInterrupt:
        interrupted("align-train")
    if history:
        console.print(f"trained to step {len(history)}: end-point error {history[0]['epe']:.2f} -> "
                      f"{history[-1]['epe']:.2f} px")
        if "val_epe_median" in history[-1]:
            console.print(f"held-out residual fields: median EPE {history[-1]['val_epe_median']:.2f} px")
    console.print(f"wrote {out} and {out.with_suffix('.loss.png')}")


@app.command()
def autolabel(
    workspace: Optional[Path] = WorkspaceOption,
    config: Optional[Path] = config_option("autolabel"),
    detector: Optional[Path] = typer.Option(None, "--detector", metavar="FILE|NAME", help=shown(
        "Detector: an ultralytics model or YOLOv7 ONNX export, or a name from `ums weights list`.", "none: required")),
    detector_format: Optional[str] = choice_option("ums.autolabel.detectors:DetectorConfig.format", "What --detector is "
                                                   "(auto: recognised from the file).",
                                                   shown_default=config_default("autolabel", "detector.format")),
    taxonomy: Optional[str] = typer.Option(None, metavar="NAME", help=shown(
        "labels/ file naming the detector's classes.", config_default("autolabel", "detector.taxonomy"))),
    sam: Optional[Path] = typer.Option(None, "--sam", metavar="FILE|NAME", help=shown(
        "SAM checkpoint (official sam_vit_b/l/h), or sam_vit_b/l/h (`ums weights`).", "none: required unless --no-masks")),
    sam_type: Optional[str] = choice_option("ums.autolabel.sam:ARCHITECTURES", "SAM architecture of --sam.",
                                            shown_default=config_default("autolabel", "sam.model_type")),
    sam_image: Optional[str] = choice_option("ums.autolabel.sam:SamConfig.image", "Image SAM segments (best: per box, "
                                             "the modality whose detector scored it higher).",
                                             shown_default=config_default("autolabel", "sam.image")),
    masks: Optional[bool] = typer.Option(None, "--masks/--no-masks", help="Segment the boxes with SAM."),
    device: Optional[str] = typer.Option(None, metavar="DEVICE", help=shown(
        "Device of the detector and SAM: cpu, cuda, cuda:1 ...", config_default("autolabel", "detector.device"))),
    classes: Optional[str] = typer.Option(None, "--classes", metavar="WORDS", help=shown(
        "YOLO-World/YOLOE prompts: comma-separated class names or synonyms of labels/ums.yaml.",
        "every name and synonym")),
    text_encoder: Optional[Path] = typer.Option(None, "--text-encoder", metavar="FILE|NAME", help=shown(
        "Text encoder of a YOLO-World/YOLOE detector, or a name from `ums weights list`.", "the model family's own")),
    slice_mode: Optional[str] = choice_option(
        "ums.autolabel.stage:AutolabelConfig.slice", "Sliced detection (auto: when a person would be too small for "
        "one full-image pass, from the range and the focal length).", None, "--slice",
        shown_default=config_default("autolabel", "slice")),
    slice_windows: Optional[str] = choice_option(
        "ums.autolabel.slicing:SlicingConfig.windows", "Where slices go: the whole view (grid), or a window on each "
        "isolated warm spot of the thermal image (warm-spots; the full pass covers the rest).", None, "--slice-windows",
        shown_default=config_default("autolabel", "slicing.windows")),
    object_px: Optional[float] = typer.Option(None, "--object-px", metavar="PX", help=shown(
        "Enlarge slices until a 0.5 m object spans this many detector pixels.", "as they are")),
    visible_resolution: Optional[str] = choice_option(
        "ums.autolabel.stage:AutolabelConfig.visible_resolution", "Visible image the visible detector sees: the "
        "source frame's own pixels over the thermal view (native) or the aligned image.", None,
        "--visible-resolution", shown_default=config_default("autolabel", "visible_resolution")),
    thermal_upsample: Optional[float] = typer.Option(None, "--thermal-upsample", metavar="FACTOR", help=shown(
        "Enlarge the thermal image for its detector.", config_default("autolabel", "thermal_upsample"))),
    force: Optional[bool] = typer.Option(None, "--force", help="Replace unreviewed automatic labels."),
    progress: bool = ProgressOption,
    workers: Optional[int] = WorkersOption,
    executor: Optional[str] = ExecutorOption,
    scheduler: Optional[str] = SchedulerOption,
    scheduler_file: Optional[Path] = SchedulerFileOption,
    dashboard: bool = DashboardOption,
) -> None:
    """Detect on both modalities (visible at its own resolution, sliced where objects are small), merge,
    segment with SAM; human labels are never overwritten."""
    from ums.autolabel.stage import AutolabelConfig, autolabel_workspace

    _run_workspace_stage("autolabel", AutolabelConfig, autolabel_workspace, workspace, config, progress,
                         executor_overrides(workers, executor, scheduler, scheduler_file, dashboard),
                         detector={"weights": detector, "format": detector_format, "taxonomy": taxonomy, "device": device,
                                   "classes": classes, "text_encoder": text_encoder},
                         sam={"checkpoint": sam, "model_type": sam_type, "image": sam_image, "device": device},
                         masks=masks, force=force, slice=slice_mode, visible_resolution=visible_resolution,
                         thermal_upsample=thermal_upsample, slicing={"windows": slice_windows, "object_px": object_px})


@app.command()
def review(
    workspace: Optional[Path] = WorkspaceOption,
    port: int = typer.Option(5151, min=1, max=65535, help="Port of the FiftyOne App (bound to 127.0.0.1)."),
    launch: bool = typer.Option(True, "--launch/--no-launch", help="Serve the App after building the dataset."),
    sync: bool = typer.Option(False, "--sync", help="Bring the reviewer's tags, edits, deletions and additions back."),
) -> None:
    """Review pairs and labels in the FiftyOne App; --sync brings the review back as human labels."""
    from ums.review import NothingToReview, build_review_dataset, launch_app, sync_review

    try:
        with Workspace.open(workspace, create=False) as ws:
            if sync:
                report = sync_review(ws)
                console.print(_table("ums review --sync", report.rows()))
                _issue_lines(report.issues, 20)
                return
            dataset = build_review_dataset(ws)
            console.print(f"review dataset {dataset.name}: {len(dataset.select_group_slices(['infrared', 'visible']))} "
                          f"samples in {len(dataset.distinct('capture_id'))} capture groups; saved views: "
                          f"{', '.join(dataset.list_saved_views())}")
    except NothingToReview as exc:
        fail(exc, 1)
    except (OSError, RuntimeError, WorkspaceError) as exc:
        fail(exc)
    if launch:
        console.print(f"FiftyOne App: http://127.0.0.1:{port}/ (Ctrl-C to stop; then `ums review --sync`)")
        try:
            launch_app(dataset, port)
        except KeyboardInterrupt:  # Ctrl-C is how the App is meant to stop: no interruption to report
            console.print("FiftyOne App stopped: `ums review --sync` brings the review back")


@app.command()
def queue(
    workspace: Optional[Path] = WorkspaceOption,
    config: Optional[Path] = config_option("queue"),
    rank: str = choice_option("ums.queue_order:RANKS", "priority: the expected number of label errors, from the evidence; "
                              "cleanlab: cleanlab's object-detection label quality, for comparison.", shown_default="priority",
                              default="priority"),
    limit: int = typer.Option(20, min=0, help="Captures to print (0: every unreviewed one)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per capture per line (capture_id, priority, reasons)."),
    progress: bool = ProgressOption,
    workers: Optional[int] = WorkersOption,
    executor: Optional[str] = ExecutorOption,
    scheduler: Optional[str] = SchedulerOption,
    scheduler_file: Optional[Path] = SchedulerFileOption,
    dashboard: bool = DashboardOption,
) -> None:
    """Weigh the evidence against every label, then list the unreviewed captures most likely to hold label errors first."""
    import json

    from ums.core.executors import ExecutorError
    from ums.queue import QueueConfig, queue_workspace
    from ums.queue_order import review_order

    try:
        settings, where = _stage_settings("queue", QueueConfig, config, progress and not as_json,
                                          executor_overrides(workers, executor, scheduler, scheduler_file, dashboard))
        with Workspace.open(workspace, create=False) as ws:
            report = queue_workspace(ws, settings, where)
            order = review_order(ws, rank=rank, limit=limit or None)
    except (ConfigError, OSError, ValueError, WorkspaceError, ExecutorError) as exc:
        fail(exc)
    except KeyboardInterrupt:
        interrupted("queue")
    if as_json:
        for entry in order:
            sys.stdout.write(json.dumps(entry.as_dict()) + "\n")
    else:
        console.print(_table("ums queue", report.rows()))
        _issue_lines(report.issues or [], 20)
        Console().print(_queue_table(order, rank))
    _finish(report, "queue")


def _queue_table(order, rank: str) -> Table:
    heading = "expected errors" if rank == "priority" else "1 - cleanlab quality"
    table = Table("#", "capture", heading, "why", title=f"review first ({rank})")
    for position, entry in enumerate(order, 1):
        table.add_row(str(position), entry.capture_id, f"{entry.priority:.2f}", escape("; ".join(entry.reasons[:3])))
    return table


labels_app = CliTyper(help="Labels that come from elsewhere: a released dataset, a CVAT or Label Studio export.",
                      no_args_is_help=True, rich_markup_mode=None)
app.add_typer(labels_app, name="labels")


@labels_app.command("import")
def labels_import(
    file: Path = typer.Argument(..., metavar="PATH", help="A COCO annotations.json (or its folder), or a YOLO data.yaml, "
                                "labels folder or .txt file."),
    fmt: str = choice_option("ums.labels_import:FORMATS", "The file's format.", ..., "--format"),
    source: str = choice_option("ums.labels_import:SOURCES", "human: protected like reviewed labels; auto: replaced by "
                                "a later import of the same --model, never over human work.", ..., "--source"),
    model: Optional[str] = typer.Option(None, metavar="NAME", help="auto: the model that made the labels [default: imported]."),
    taxonomy: Optional[str] = typer.Option(None, metavar="NAME", help="The file's class names' taxonomy (labels/NAME.yaml) "
                                           "[default: detected from the names]."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would come in; write nothing."),
    workspace: Optional[Path] = WorkspaceOption,
    max_issues: int = typer.Option(20, metavar="N", help="Issues to print."),
) -> None:
    """Bring existing annotations into the workspace, mapped to the UMS taxonomy and matched to captures by file name."""
    from ums.labels_import import LabelImportError, import_labels

    try:
        with Workspace.open(workspace, create=False) as ws:
            report = import_labels(ws, file, fmt, source, model=model, taxonomy=taxonomy, dry_run=dry_run)
    except (LabelImportError, WorkspaceError, OSError) as exc:
        fail(exc)
    console.print(_table(f"ums labels import {file.name}", report.rows()))
    _issue_lines(report.issues, max_issues)
    if report.refused:
        fail(f"{file}: nothing imported, the file has malformed entries (listed above); correct them and import again", 1)
    if not report.added and not getattr(report, "confirmed", 0) and not dry_run:
        fail(f"{file}: no label came in (see the issues above)", 1)


@app.command("train-detector")
def train_detector(
    workspace: Optional[Path] = WorkspaceOption,
    config: Optional[Path] = config_option("train-detector"),
    base: Optional[str] = typer.Option(None, metavar="NAME|FILE", help=shown(
        "Model to fine-tune (a `ums weights` name or .pt) or an ultralytics .yaml to train from scratch.",
        config_default("train-detector", "base"))),
    epochs: Optional[int] = typer.Option(None, min=1, metavar="N", help=shown("Epochs.", config_default("train-detector", "epochs"))),
    image_size: Optional[int] = typer.Option(None, metavar="PX", help=shown(
        "Training input size.", config_default("train-detector", "image_size"))),
    batch: Optional[int] = typer.Option(None, min=1, metavar="N", help=shown("Batch size.", config_default("train-detector", "batch"))),
    device: Optional[str] = typer.Option(None, metavar="DEVICE", help=shown(
        "cpu, cuda, cuda:1 ...", config_default("train-detector", "device"))),
    name: Optional[str] = typer.Option(None, metavar="RUN", help=shown(
        "Run folder under <workspace>/detectors/.", "the next train-N")),
    resume: Optional[bool] = typer.Option(None, "--resume", help="Continue an interrupted run from its last.pt."),
    modalities: Optional[str] = choice_option("ums.train_detector:TrainDetectorConfig.modalities",
                                              "Images of each pair to train on.",
                                              shown_default=config_default("train-detector", "modalities")),
    split_rule: Optional[str] = choice_option("ums.train_detector:TrainDetectorConfig.split",
                                              "Where the val split comes from.", None, "--split",
                                              shown_default=config_default("train-detector", "split")),
    seed: Optional[int] = typer.Option(None, help=shown("Random seed.", config_default("train-detector", "seed"))),
    min_steps: Optional[int] = typer.Option(None, min=0, metavar="N", help=shown(
        "Optimizer steps at least (a small reviewed set gets more epochs; 0: exactly --epochs).",
        config_default("train-detector", "min_steps"))),
    weights_from: Optional[str] = choice_option("ums.train_detector:TrainDetectorConfig.weights_from",
                                                "Which epoch best.pt holds (auto: the last one while val has fewer "
                                                "than 10 captures).", None, "--weights-from",
                                                shown_default=config_default("train-detector", "weights_from")),
    progress: bool = ProgressOption,
) -> None:
    """Fine-tune a detector on the reviewed and human labels; relabel the rest with
    `ums autolabel --detector <workspace>/detectors/<run>/best.pt --taxonomy ums --force`."""
    from ums.train_detector import TrainDetectorConfig, TrainDetectorError, train_detector as train

    try:
        settings = load_config(TrainDetectorConfig, config or default_config_path("train-detector"), base=base,
                               epochs=epochs, image_size=image_size, batch=batch, device=device, name=name,
                               resume=resume, modalities=modalities, split=split_rule, seed=seed,
                               min_steps=min_steps, weights_from=weights_from)
        problem = device_problem(settings.device)
        if problem:
            fail(problem)
        with Workspace.open(workspace, create=False) as ws:
            report = train(ws, settings, progress=progress)
    except (ConfigError, TrainDetectorError, WorkspaceError, OSError) as exc:
        fail(exc)
    except KeyboardInterrupt:
        typer.echo("train-detector interrupted: `ums train-detector --resume` continues the run from its last epoch",
                   err=True)
        raise typer.Exit(130)
    console.print(_table("ums train-detector", report.rows()))
    for notice in report.notices:
        console.print(f"[yellow]{escape(notice)}[/yellow]")


@app.command()
def split(
    workspace: Optional[Path] = WorkspaceOption,
    config: Optional[Path] = config_option("split"),
    seed: Optional[int] = typer.Option(None, help=shown("Random seed.", config_default("split", "seed"))),
) -> None:
    """train / val / test by blocks of consecutive captures, stratified, rejected pairs left out."""
    from ums.split import SplitConfig, split_workspace

    try:
        settings = load_config(SplitConfig, config or default_config_path("split"), seed=seed)
        with Workspace.open(workspace, create=False) as ws:
            report = split_workspace(ws, settings)
    except (ConfigError, WorkspaceError, OSError) as exc:
        fail(exc)
    # strata read `class:car: 3`: with emoji codes on, rich would print `class🚗 3`
    plain = Console(stderr=True, soft_wrap=True, emoji=False, markup=False)
    plain.print(_table("ums split", report.rows()))
    for issue in report.issues:
        plain.print(f"{issue.level}: {issue.message}", style="yellow")


@app.command()
def export(
    out: Path = typer.Argument(..., metavar="OUT", help="Folder to write the export into: new, empty, or an earlier "
                                                         "export of this workspace in this format."),
    format: str = choice_option("ums.export:FORMATS", "The layout (msrs: what tsjnet train reads).", ..., "--format", "-f"),
    redact: bool = typer.Option(False, help="Drop GPS and laser-range-finder positions, serial numbers and absolute "
                                            "paths from exported metadata."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete what OUT holds first (needed for a folder that "
                                                               "is not this workspace's export in this format)."),
    workspace: Optional[Path] = WorkspaceOption,
) -> None:
    """Aligned pairs and their labels: the MSRS layout with a dataset card, COCO, YOLO, VOC or semantic PNGs."""
    from ums.export import NothingToExport, export_workspace

    try:
        with Workspace.open(workspace, create=False) as ws:
            report = export_workspace(ws, out, format, redact, overwrite, show_progress=sys.stderr.isatty())
    except NothingToExport as exc:
        fail(exc, 1)
    except (ValueError, WorkspaceError, OSError) as exc:
        fail(exc)
    except KeyboardInterrupt:
        interrupted("export")
    plain = Console(stderr=True, soft_wrap=True, emoji=False, markup=False)  # messages quote `ums split` etc. verbatim
    if report.cleared:
        plain.print(f"--overwrite: deleted the {report.cleared} entries {out} held")
    splits = ", ".join(f"{name} {count}" for name, count in report.splits.items())
    plain.print(f"exported {report.pairs} pairs ({splits}) and {report.labels} labels as {format} to {out}")
    if report.removed_temporaries:
        plain.print(f"removed {report.removed_temporaries} temporaries a killed export had left")
    for issue in report.issues:
        plain.print(f"{issue.level}: {issue.message}", style="yellow")


@app.command("synth-flight")
def synth_flight_command(
    out: Path = typer.Argument(..., metavar="OUT", help="Folder to write the flight into (DCIM/... + groundtruth.json)."),
    pairs: Optional[Path] = typer.Option(None, metavar="DIR", help=shown(
        "Aligned IR/visible pairs (ir/ + vi/), e.g. ../shared/data/llvip/train.", "procedural scenes")),
    n: Optional[int] = typer.Option(None, "--n", min=1, help=shown("Number of captures.", config_default("synth-flight", "n"))),
    seed: Optional[int] = typer.Option(None, help=shown("Random seed.", config_default("synth-flight", "seed"))),
    config: Optional[Path] = config_option("synth-flight"),
    progress: bool = ProgressOption,
) -> None:
    """Write a synthetic M30T flight (W + T frames, DJI metadata) with exact ground truth."""
    from ums.synth import SynthFlightConfig, synth_flight

    try:
        settings = load_config(SynthFlightConfig, config or default_config_path("synth-flight"),
                               n=n, seed=seed, pairs=pairs, show_progress=progress and sys.stderr.isatty())
        truth = synth_flight(out, settings)
    except (ConfigError, OSError, ValueError) as exc:
        fail(exc)
    except KeyboardInterrupt:
        interrupted("synth-flight")
    console.print(f"wrote {settings.n} captures under {out}; ground truth: {truth}")


@app.command()
def report(
    workspace: Optional[Path] = WorkspaceOption,
    page_size: int = typer.Option(50, min=1, help="Captures per page (index.html, page-2.html, ...)."),
) -> None:
    """Write reports/index.html: summary, every capture's thumbnails with captions and its registration, issues."""
    from ums.report import write_html_report

    try:
        with Workspace.open(workspace, create=False) as ws:
            page = write_html_report(ws, page_size)
    except (WorkspaceError, OSError) as exc:
        fail(exc)
    console.print(f"report: {page}")


@app.command()
def demo(
    out: Path = typer.Option(Path("demo-out"), metavar="DIR", help="Folder for the synthetic flight and its workspace."),
    n: int = typer.Option(6, "--n", min=1, help="Number of captures."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """The whole pipeline on an embedded default: a procedural flight through every stage, then a report."""
    from ums.demo import run_demo

    try:
        result = run_demo(out, n=n, show_progress=progress and sys.stderr.isatty())
    except (WorkspaceError, ConfigError, OSError, ValueError) as exc:
        fail(exc)
    except KeyboardInterrupt:
        interrupted("demo")
    if isinstance(result.autolabel, str):
        console.print(f"[yellow]autolabel {result.autolabel}[/yellow]")
    console.print(_table("ums demo", result.rows()))
    console.print(f"open {result.report} in a browser")


weights_app = CliTyper(help="Public model weights by name (--detector yolov8x, --sam sam_vit_b): list, download (the only "
                             "command that uses the network), verify, path. Files live in UMS_HOME [~/.cache/ums].",
                        no_args_is_help=True, rich_markup_mode=None)
app.add_typer(weights_app, name="weights")
WEIGHT_COLUMNS = ("name", "for", "size", "licence", "source", "hash", "present")


@weights_app.command("list")
def weights_list(as_json: bool = typer.Option(False, "--json", help="One JSON object per weight.")) -> None:
    """Every registered weight: purpose, size, licence, source, hash source, and whether it is here."""
    import json

    from ums.weights import WeightsError, listing, weights_home

    try:
        rows = listing()
    except (WeightsError, OSError) as exc:
        fail(exc)
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row))
        return
    table = Table(title=f"weights in {weights_home()}")
    for column in WEIGHT_COLUMNS:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(row[column] for column in WEIGHT_COLUMNS))
    Console(width=None if sys.stdout.isatty() else 250).print(table)  # pipes and tests get whole rows


@weights_app.command("download")
def weights_download(names: list[str] = typer.Argument(..., metavar="NAME", help="Names from `ums weights list`.")) -> None:
    """Fetch weights into UMS_HOME: resumable, size- and SHA-256-checked. UMS_WEIGHTS_MIRROR=URL fetches
    <URL>/<file name> instead of the publisher's address."""
    from ums.weights import WeightsError, lookup

    try:
        entries = [lookup(name) for name in names]  # every name is known before anything is fetched
    except WeightsError as exc:
        fail(exc)
    failed = [entry.name for entry in entries if not _download_one(entry)]
    if failed:
        raise typer.Exit(1)


def _download_one(entry) -> bool:
    from ums.weights import WeightsError, download, next_step

    try:
        path = download(entry, on_progress=_byte_progress(entry.name) if sys.stderr.isatty() else None)
    except (WeightsError, OSError) as exc:
        print_error(f"{entry.name}: {error_text(exc)}")
        return False
    console.print(f"{entry.name}: {escape(str(path))}")
    if next_step(entry):
        console.print(f"  next: {escape(next_step(entry))}")
    return True


def _byte_progress(name: str):
    def show(done: int, total: int | None) -> None:
        of = f" of {total / 2**20:,.1f}" if total else ""
        sys.stderr.write(f"\r{name}: {done / 2**20:,.1f}{of} MiB" + ("\n" if done == total else ""))

    return show


@weights_app.command("verify")
def weights_verify(names: Optional[list[str]] = typer.Argument(None, metavar="NAME", help="Names [default: every file present].")) -> None:
    """Check weights against what is published of them (size, SHA-256), that they are PyTorch checkpoints,
    and against the SHA-256 recorded at download (recorded now if never); exit 1 on a mismatch."""
    from ums.weights import WeightsError, verify, weights_home

    try:
        verdicts = verify(names)
    except (WeightsError, OSError) as exc:
        fail(exc)
    if not verdicts:
        fail(f"no registered weight file in {weights_home()} (fetch one with `ums weights download NAME`, or set UMS_HOME "
              "to where they are)", 1)
    for verdict in verdicts:
        if verdict.ok:
            console.print(f"{verdict.name}: [green]ok[/green] {escape(verdict.message)}")
        else:
            print_error(f"{verdict.name}: {verdict.message} ({verdict.next_step})")
    if not all(verdict.ok for verdict in verdicts):
        raise typer.Exit(1)


@weights_app.command("path")
def weights_path(name: str = typer.Argument(..., metavar="NAME", help="A name from `ums weights list`.")) -> None:
    """Print the file NAME stands for wherever a weight path is taken; exit 1 while it is absent."""
    from ums.weights import UnknownWeights, local_path, lookup, missing_message, weights_home

    try:
        entry = lookup(name)
    except UnknownWeights as exc:
        fail(exc)
    path = local_path(entry, weights_home())
    typer.echo(str(path))
    if not path.is_file():
        fail(f"{name} is absent: {missing_message(entry, weights_home())}", 1)


