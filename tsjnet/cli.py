"""The ``tsjnet`` command: a thin shell over the TSJNet library."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

import tsjnet  # noqa: F401  (applies the offline settings first)
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
    executor_overrides,
    fail,
    interrupted,
    shown,
    version_option,
)

MIN_BATCH = 2  # split attention's BatchNorm cannot normalise one pair in train mode

app = CliTyper(name="tsjnet", cls=CliGroup, help="TSJNet infrared/visible fusion: train, fuse, evaluate.",
               no_args_is_help=True, add_completion=False,
               rich_markup_mode=None)  # help text is text: "[default: ...]" is not markup
ProgressOption = typer.Option(True, help="Show a progress bar.")
DeviceOption = typer.Option("cpu", metavar="DEVICE", help="cpu, cuda, cuda:1 ...")


@app.callback()
def main(version: bool = version_option("tsjnet", tsjnet.__version__)) -> None:
    """TSJNet infrared/visible fusion network."""


def _check_device(device: str, option: str = "--device") -> None:
    problem = device_problem(device, option)
    if problem:
        fail(problem)


def _config(path: Optional[Path]):
    from tsjnet.model import TSJNetConfig

    try:
        return TSJNetConfig.load(path) if path else TSJNetConfig()
    except (ValueError, OSError) as error:
        fail(f"--config {path}: {error}" if isinstance(error, ValueError) else error)


@app.command()
def info() -> None:
    """Versions and compute devices this installation will use."""
    import torch

    typer.echo(f"tsjnet {tsjnet.__version__}")
    typer.echo(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}")
    for index in range(torch.cuda.device_count()):
        typer.echo(f"  cuda:{index} {torch.cuda.get_device_name(index)}")
    try:
        import natten

        typer.echo(f"natten {natten.__version__}")
    except ImportError:
        typer.echo("natten not installed (the pure-PyTorch neighborhood attention is used)")


@app.command()
def summary(
    config: Optional[Path] = typer.Option(None, metavar="FILE", help="Model config (YAML or JSON) [default: the released TSJNet]."),
    height: int = typer.Option(480, min=1, help="Also count MACs at this input height."),
    width: int = typer.Option(640, min=1, help="Also count MACs at this input width."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON: params, macs_480x640, parts, config."),
) -> None:
    """Parameters and MACs of a TSJNet configuration (counted on the meta device: instant, no memory)."""
    from tsjnet.summary import summarize

    result = summarize(_config(config), height, width)
    if as_json:
        typer.echo(json.dumps(result))
        return
    typer.echo(f"parameters: {result['params']:,}")
    for part, count in result["params_by_part"].items():
        typer.echo(f"  {part}: {count:,}")
    for key, value in result.items():
        if key.startswith("macs_"):
            typer.echo(f"{key.replace('macs_', 'MACs at ')}: {value / 1e9:,.1f} G")


@app.command()
def convert(
    official: Path = typer.Argument(..., metavar="OFFICIAL", help="The official TSJNet.pth (dict of DIDF_Encoder, "
                                    "DIDF_Decoder, ...), or tsjnet_official: that file in UMS_HOME (`ums weights list`)."),
    out: Path = typer.Argument(..., metavar="OUT", help="Output weights (.safetensors; the JSON config is written beside it)."),
    keep_unused: bool = typer.Option(False, help="Keep the never-called official modules (official_layout)."),
) -> None:
    """Convert the official checkpoint into ours (safetensors + JSON config); loading is strict."""
    from tsjnet.model.checkpoint import load_official, save_checkpoint
    from ums.weights import resolve_weights

    try:
        official = resolve_weights(official, "tsjnet convert")
    except FileNotFoundError as error:
        fail(str(error))
    try:
        model, dropped = load_official(official, keep_unused)
    except OSError as error:
        fail(error)
    except (ValueError, RuntimeError) as error:
        fail(f"convert: {official}: {error}")
    try:
        path = save_checkpoint(model, out, metadata={"source": official.name})
    except OSError as error:
        fail(error)
    typer.echo(f"wrote {path} and {path.with_suffix('.json').name} (relative position bias: "
               f"{model.config.rel_pos_bias}; {len(dropped)} never-used official tensors dropped)")


@app.command()
def fuse(
    ir: Path = typer.Option(..., "--ir", metavar="DIR", help="Folder of infrared images."),
    vi: Path = typer.Option(..., "--vi", metavar="DIR", help="Folder of visible images (same file stems)."),
    out: Path = typer.Option(..., "--out", metavar="DIR", help="Folder for the fused images (<stem>.png)."),
    method: str = choice_option("tsjnet.fuse:FuseConfig.method", "tsjnet, or a classical baseline.", "tsjnet"),
    weights: Optional[Path] = typer.Option(None, metavar="FILE", help=shown("TSJNet weights (.safetensors) for --method tsjnet.",
                                                                            "none: required by --method tsjnet")),
    device: str = DeviceOption,
    precision: str = choice_option("tsjnet.fuse:FuseConfig.precision", "Autocast precision (bf16 and fp16: on a GPU).", "fp32"),
    batch_size: int = typer.Option(1, min=1, help="Pairs per forward pass (same-size images are batched)."),
    official_compat: bool = typer.Option(False, help="Reproduce the released script: 512x512 resize + min-max stretch."),
    grey: bool = typer.Option(False, help="Write the fused luma only (no colour recombination)."),
    overwrite: bool = typer.Option(False, help="Fuse again pairs already in --out."),
    progress: bool = ProgressOption,
    workers: Optional[int] = WorkersOption,
    executor: Optional[str] = ExecutorOption,
    scheduler: Optional[str] = SchedulerOption,
    scheduler_file: Optional[Path] = SchedulerFileOption,
    dashboard: bool = DashboardOption,
) -> None:
    """Fuse IR/visible pairs at native size; colour comes back from the visible image's Cb/Cr."""
    from tsjnet.fuse import FuseConfig, fuse_folders
    from ums.core.executors import ExecutorError

    from ums.core.config import load_stage_config

    overrides = executor_overrides(workers, executor, scheduler, scheduler_file, dashboard, progress)
    try:
        config, where = load_stage_config(FuseConfig, None, overrides, method=method, weights=weights, device=device,
                                          precision=precision, batch_size=batch_size, official_compat=official_compat,
                                          grey=grey, overwrite=overwrite)
        if config.method == "tsjnet" and where.executor != "dask":  # a cluster's workers may have the GPU this machine lacks
            _check_device(config.device)
        report = fuse_folders(ir, vi, out, config, where)
    except (ValueError, OSError, ExecutorError) as error:
        fail(error)
    except KeyboardInterrupt:
        interrupted("fuse")
    for problem in report.problems:
        typer.secho(problem, fg=typer.colors.YELLOW, err=True)
    typer.echo(f"fused {len(report.written)} pairs into {out} ({len(report.skipped)} already there, "
               f"{len(report.problems)} problems)")
    if report.incomplete:
        fail(f"fuse did not finish: {len(report.written)} pairs fused, the rest not (rerun the same command to fuse them)", 1)
    if not report.written and not report.skipped:
        fail(f"no pair was fused: --ir {ir} and --vi {vi} share no readable image of the same name "
              "(pairs are matched by file stem)")


@app.command("eval")
def evaluate(
    ir: Path = typer.Option(..., "--ir", metavar="DIR", help="Folder of infrared images."),
    vi: Path = typer.Option(..., "--vi", metavar="DIR", help="Folder of visible images."),
    fused: Path = typer.Option(..., "--fused", metavar="DIR", help="Folder of fused images (same file stems)."),
    convention: str = choice_option("tsjnet.metrics.convention:CONVENTIONS", "tsjnet (mean over sources, bits) or "
                                    "cddfuse (sums, nats).", "tsjnet"),
    metric: Optional[list[str]] = choice_option("tsjnet.evaluate:METRICS", "Only these metrics (repeatable).", None,
                                                "--metric", shown_default="all"),
    as_json: bool = typer.Option(False, "--json", help='Print {"per_image": {...}, "mean": {...}} as JSON.'),
    progress: bool = ProgressOption,
) -> None:
    """Fusion metrics per image and their means: SSIM PSNR MSE VIF CC CV EN SD SF AG MI SCD Qabf Nabf."""
    from tsjnet.evaluate import METRICS, evaluate_folders

    try:
        result = evaluate_folders(ir, vi, fused, convention, tuple(metric) if metric else tuple(METRICS),
                                  show_progress=progress and not as_json)
    except (ValueError, OSError) as error:
        fail(error)
    for problem in result["problems"]:
        typer.secho(problem, fg=typer.colors.YELLOW, err=True)
    if not result["per_image"]:
        fail(f"no image was scored: --ir {ir}, --vi {vi} and --fused {fused} share no readable image of the same "
              "name (images are matched by file stem; fuse them first with `tsjnet fuse`)")
    if as_json:
        typer.echo(json.dumps(result))
        return
    typer.echo(f"{len(result['per_image'])} images, convention {convention}")
    for name, value in result["mean"].items():
        typer.echo(f"  {name:5s} {value:10.4f}")


@app.command("export-onnx")
def export_onnx(
    weights: Path = typer.Option(..., metavar="FILE", help="TSJNet weights (.safetensors)."),
    out: Path = typer.Option(..., metavar="FILE", help="ONNX file to write."),
    height: int = typer.Option(480, min=32, help="Input height (multiple of 32)."),
    width: int = typer.Option(640, min=32, help="Input width (multiple of 32)."),
) -> None:
    """Export the fusion graph (infrared, visible luma -> fused) to ONNX at one size."""
    from tsjnet.model.checkpoint import load_checkpoint
    from tsjnet.onnx_export import export_onnx as export

    try:
        path = export(load_checkpoint(weights), out, height, width)
    except (ValueError, OSError) as error:
        fail(error)
    typer.echo(f"wrote {path}")


@app.command()
def train(
    data: str = typer.Option(..., "--data", metavar="DIR|NAME", help="Dataset folder, or a name from data.named_roots (ums, msrs)."),
    config: Optional[Path] = config_option("train"),
    out: Optional[Path] = typer.Option(None, metavar="DIR", help=shown("Run folder (checkpoints, logs, weights); rerun to resume.",
                                                                       config_default("train", "out"))),
    epochs: Optional[int] = typer.Option(None, min=1, help=shown("Passes over the training split.", config_default("train", "epochs"))),
    max_steps: Optional[int] = typer.Option(None, min=1, help=shown("Stop after this many optimiser steps (resumable).",
                                                                    config_default("train", "max_steps"))),
    batch_size: Optional[int] = typer.Option(None, min=MIN_BATCH, help=shown(
        "Pairs per step per process (at least 2: the network's batch normalisation needs two).", config_default("train", "batch_size"))),
    lr: Optional[float] = typer.Option(None, help=shown("Learning rate.", config_default("train", "optim.lr"))),
    device: Optional[str] = typer.Option(None, metavar="DEVICE", help=shown(
        "auto, cpu, cuda (torchrun picks the GPU per process).", config_default("train", "device"))),
    amp: Optional[str] = choice_option("tsjnet.engine.config:TrainConfig.amp", "Mixed precision (fp16: with a gradient "
                                       "scaler).", shown_default=config_default("train", "amp")),
    compile_model: Optional[bool] = typer.Option(None, "--compile/--no-compile", help=shown(
        "torch.compile the network.", config_default("train", "compile"))),
    preset: Optional[str] = choice_option("tsjnet.losses.config:LossConfig.preset", "Loss weights: code (official run) "
                                          "or paper (Eq. 6-12).", shown_default=config_default("train", "loss.preset")),
    detector_weights: Optional[Path] = typer.Option(None, metavar="FILE|NAME", help=shown(
        "Faster R-CNN R50-FPN weights (torchvision COCO .pth), or fasterrcnn_resnet50_fpn (`ums weights`).",
        "none: required unless --no-pretrained")),
    segmenter_weights: Optional[Path] = typer.Option(None, metavar="FILE|NAME", help=shown(
        "DeepLabV3 weights for the dataset's classes.", "none: required unless --no-pretrained")),
    pretrained: bool = typer.Option(True, "--pretrained/--no-pretrained",
                                    help="--no-pretrained: random task networks (tests only)."),
    workers: Optional[int] = typer.Option(None, min=0, help=shown("DataLoader worker processes.",
                                                                  config_default("train", "data.num_workers"))),
    seed: Optional[int] = typer.Option(None, help=shown("Random seed (data order, crops, initial weights).",
                                                        config_default("train", "seed"))),
    progress: bool = ProgressOption,
) -> None:
    """Train TSJNet jointly with its detection and segmentation losses (multi-GPU: torchrun --nproc-per-node N)."""
    from tsjnet.engine import TrainConfig, train as run_training
    from ums.core.config import ConfigError, default_config_path

    try:
        base = TrainConfig.load(config or default_config_path("train"))
        overrides = {
            "out": out, "epochs": epochs, "max_steps": max_steps, "batch_size": batch_size, "device": device,
            "amp": amp, "compile": compile_model, "seed": seed, "show_progress": progress,
            "optim": {"lr": lr}, "loss": {"preset": preset} if preset else {},
            "tasks": {"detector_weights": detector_weights, "segmenter_weights": segmenter_weights,
                      "pretrained": pretrained},
            "data": {"root": base.data.resolve_root(data), "num_workers": workers},
        }
        settings = TrainConfig.load(config or default_config_path("train"), **overrides)
        _check_training(settings)
        trainer = run_training(settings)
    except (ConfigError, OSError) as error:
        fail(error)
    except ValueError as error:
        fail(f"train: {error}")
    except KeyboardInterrupt:
        interrupted("train")
    if trainer.context.is_main:
        typer.echo(f"trained {trainer.counters.global_step} steps ({trainer.counters.epoch} epochs); weights "
                   f"{trainer.out / 'tsjnet.safetensors'}, logs {trainer.out / 'metrics.csv'}, "
                   f"curves {trainer.out / 'curves.png'}")


def _check_training(settings) -> None:
    """What would fail only after the data and networks are loaded: a batch the network cannot
    normalise, a GPU this machine lacks."""
    if settings.batch_size < MIN_BATCH:
        fail(f"train: batch_size {settings.batch_size} is too small: the network's batch normalisation needs at least "
              f"{MIN_BATCH} pairs per step (set --batch-size {MIN_BATCH} or more)")
    _check_device(settings.device)


def _image_sets(values: list[str]) -> dict[str, Path]:
    sets = {}
    for value in values:
        name, sep, folder = value.partition("=")
        if not sep or not name or not folder:
            fail(f"--images {value!r} names no image set (write NAME=FOLDER, e.g. --images fused=runs/fused)")
        sets[name] = Path(folder)
    return sets


def _print_or_json(result: dict, as_json: bool, columns: tuple[str, ...]) -> None:
    if as_json:
        typer.echo(json.dumps(result))
        return
    typer.echo("| images | " + " | ".join(columns) + " |")
    typer.echo("| --- |" + " ---: |" * len(columns))
    for name, values in result.items():
        typer.echo(f"| {name} | " + " | ".join(f"{values[c]:.4f}" if isinstance(values[c], float) else str(values[c])
                                               for c in columns) + " |")


@app.command("eval-det")
def eval_det(
    images: list[str] = typer.Option(..., "--images", metavar="NAME=DIR", help="Repeatable: fused=F/ infrared=IR/ visible=VI/."),
    labels: Path = typer.Option(..., metavar="DIR", help="Folder of YOLO .txt or VOC .xml boxes (file stems = image stems)."),
    classes: Optional[Path] = typer.Option(None, metavar="FILE", help="classes.txt [default: beside the labels]."),
    detector_weights: Optional[Path] = typer.Option(None, metavar="FILE|NAME", help=shown(
        "Faster R-CNN R50-FPN weights, or fasterrcnn_resnet50_fpn (`ums weights`).", "none: required unless --no-pretrained")),
    detector_labels: str = choice_option("tsjnet.task_heads:TaskConfig.detector_labels", "coco (91-way COCO head) or dataset "
                                         "(1 + dataset classes).", "coco"),
    pretrained: bool = typer.Option(True, "--pretrained/--no-pretrained", help="--no-pretrained: random (tests)."),
    device: str = DeviceOption,
    score_threshold: float = typer.Option(0.05, min=0.0, max=1.0, help="Detections below this score are not counted."),
    as_json: bool = typer.Option(False, "--json", help="Print the scores as JSON."),
    progress: bool = ProgressOption,
) -> None:
    """Detection mAP (pycocotools) of one detector on fused vs infrared vs visible images (Table 3)."""
    from tsjnet.downstream import evaluate_detection
    from tsjnet.task_heads import TaskConfig

    from ums.core.config import load_config

    _check_device(device)
    try:
        config = load_config(TaskConfig, None, detector_weights=detector_weights, detector_labels=detector_labels,
                             pretrained=pretrained)
        result = evaluate_detection(_image_sets(images), labels, classes, config, device, score_threshold,
                                    progress and not as_json)
    except OSError as error:
        fail(error)
    except ValueError as error:
        fail(f"eval-det: {error}")
    _print_or_json(result, as_json, ("AP50", "AP", "AR100", "images"))


@app.command("eval-seg")
def eval_seg(
    images: list[str] = typer.Option(..., "--images", metavar="NAME=DIR", help="Repeatable: fused=F/ infrared=IR/ visible=VI/."),
    labels: Path = typer.Option(..., metavar="DIR", help="Folder of class-id PNGs (MSRS Segmentation_labels)."),
    segmenter: str = choice_option("tsjnet.task_heads:TaskConfig.segmenter", "The segmentation network.", "deeplabv3_resnet101"),
    segmenter_weights: Optional[Path] = typer.Option(None, metavar="FILE|NAME", help=shown(
        "Weights for the dataset's classes.", "none: required unless --no-pretrained")),
    num_classes: int = typer.Option(9, "--classes", min=1, help="Class count (MSRS: 9)."),
    taxonomy: str = typer.Option("msrs-seg", metavar="NAME", help="labels/ file naming the classes."),
    pretrained: bool = typer.Option(True, "--pretrained/--no-pretrained", help="--no-pretrained: random (tests)."),
    device: str = DeviceOption,
    as_json: bool = typer.Option(False, "--json", help="Print the scores as JSON."),
    progress: bool = ProgressOption,
) -> None:
    """Per-class IoU and mIoU of one segmenter on fused vs infrared vs visible images (Table 3)."""
    from tsjnet.downstream import evaluate_segmentation
    from tsjnet.task_heads import TaskConfig
    from ums.taxonomy import load_taxonomy

    from ums.core.config import load_config

    _check_device(device)
    try:
        names = load_taxonomy(taxonomy).names
        class_names = [names.get(i, str(i)) for i in range(num_classes)]
        config = load_config(TaskConfig, None, segmenter=segmenter, segmenter_weights=segmenter_weights,
                             segmentation_classes=num_classes, pretrained=pretrained)
        result = evaluate_segmentation(_image_sets(images), labels, config, class_names, device, progress and not as_json)
    except OSError as error:
        fail(error)
    except ValueError as error:
        fail(f"eval-seg: {error}")
    _print_or_json(result, as_json, ("mIoU", "images"))


if __name__ == "__main__":  # torchrun --nproc-per-node N -m tsjnet.cli train ...
    app()
