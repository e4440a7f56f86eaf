"""Training throughput (samples/s) of `tsjnet train`'s step: forward, fp32 losses, backward, step.

    python bench/train.py [--data ../shared/data/msrs] [--steps 6]

CPU rows: the tiny config (pipelines/train-tiny.yaml) at 96x128 with and without the detector term.
GPU rows (when CUDA is present): the full network at 480x640, batch 2, bf16, with Faster R-CNN
R50-FPN and DeepLabV3-R101 (random weights: speed does not depend on them) on synthetic pairs that
carry boxes and masks, with and without gradient checkpointing. The paper's two RTX 3090s trained at about 0.6 samples/s; target on one
H100 >= 8. Ratios are against the first row of the same run.
"""

from __future__ import annotations

import argparse
import itertools
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tsjnet.engine import TrainConfig, Trainer  # noqa: E402


def samples_per_second(config: TrainConfig, steps: int, warmup: int = 2) -> float:
    trainer = Trainer(config)
    batches = itertools.cycle(list(itertools.islice(iter(trainer._loader(0)), warmup + steps)))
    for _ in range(warmup):
        trainer.train_step(next(batches))
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(next(batches))
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    return steps * config.batch_size / (time.perf_counter() - start)


def synthetic_pairs(folder: Path, count: int = 8, size: tuple[int, int] = (480, 640)) -> Path:
    """Random 480x640 pairs with one box and an MSRS-id mask each: the full-size rows need every loss
    term to run (the staged public MSRS pairs have no segmentation labels), and throughput does not
    depend on the pixels."""
    rng = np.random.default_rng(0)
    for sub in ("ir", "vi", "labels", "Segmentation_labels"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        cv2.imwrite(str(folder / "ir" / f"{index:03d}.png"), rng.integers(0, 256, size, dtype=np.uint8))
        cv2.imwrite(str(folder / "vi" / f"{index:03d}.png"), rng.integers(0, 256, (*size, 3), dtype=np.uint8))
        cv2.imwrite(str(folder / "Segmentation_labels" / f"{index:03d}.png"),
                    rng.integers(0, 9, size, dtype=np.uint8))
        (folder / "labels" / f"{index:03d}.txt").write_text("2 0.5 0.5 0.2 0.3\n")
    (folder / "classes.txt").write_text("person\nbicycle\ncar\n")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "msrs")
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        synthetic = synthetic_pairs(Path(scratch, "pairs"))
        if not (args.data / "ir").is_dir():
            print(f"{args.data} absent: the CPU rows time synthetic 480x640 pairs too")
            args.data = synthetic
        tiny = ROOT / "pipelines" / "train-tiny.yaml"
        common = dict(out=Path(scratch, "run"), show_progress=False, tasks={"pretrained": False},
                      data={"root": args.data, "val_split": None})
        rows.append(("tiny, CPU, fusion terms only (96x128, batch 2)", samples_per_second(
            TrainConfig.load(tiny, device="cpu", loss={"detection": 0.0, "segmentation": 0.0}, **common), args.steps)))
        rows.append(("tiny, CPU, + Faster R-CNN term", samples_per_second(
            TrainConfig.load(tiny, device="cpu", loss={"segmentation": 0.0}, **common), args.steps)))
        if torch.cuda.is_available():
            full = ROOT / "pipelines" / "train.yaml"
            gpu = dict(common, device="cuda", amp="bf16", data={"root": synthetic, "val_split": None, "num_workers": 4})
            rows.append(("full, GPU bf16, fusion + detection + segmentation (480x640, batch 2)",
                         samples_per_second(TrainConfig.load(full, **gpu), args.steps)))
            rows.append(("full, GPU bf16, + gradient checkpointing", samples_per_second(
                TrainConfig.load(full, model={"gradient_checkpointing": True}, **gpu), args.steps)))
            rows.append(("full, GPU bf16, fusion terms only", samples_per_second(
                TrainConfig.load(full, loss={"detection": 0.0, "segmentation": 0.0}, **gpu), args.steps)))
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, {device}; torch {torch.__version__}")
    print("| row | samples/s | vs first row |")
    print("| --- | ---: | ---: |")
    for name, rate in rows:
        print(f"| {name} | {rate:.2f} | {rate / rows[0][1]:.2f}x |")


if __name__ == "__main__":
    main()
