"""Helpers the tests of this folder share."""

from __future__ import annotations

import shutil
from pathlib import Path
import cv2
import numpy as np
from tests.conftest import shared_data


def make_ums_export(root: Path, names=("a", "b", "c", "d"), size=(96, 128)) -> Path:
    """The `ums export --format msrs` layout with a bright box per image and MSRS ids 0-8."""
    height, width = size
    for sub in ("ir", "vi", "Segmentation_labels", "labels"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index, name in enumerate(names):
        ir = rng.integers(0, 60, size, dtype=np.uint8)
        vi = rng.integers(0, 60, (*size, 3), dtype=np.uint8)
        ir[20:50, 30:70] = 230
        vi[20:50, 30:70] = (40, 40, 220)
        labels = np.zeros(size, np.uint8)
        labels[20:50, 30:70] = 1 + index % 8
        cv2.imwrite(str(root / "ir" / f"{name}.png"), ir)
        cv2.imwrite(str(root / "vi" / f"{name}.png"), vi)
        cv2.imwrite(str(root / "Segmentation_labels" / f"{name}.png"), labels)
        (root / "labels" / f"{name}.txt").write_text(f"2 {50 / width} {35 / height} {40 / width} {30 / height}\n")
    (root / "classes.txt").write_text("person\nbicycle\ncar\n")
    (root / "train.txt").write_text("".join(f"{n}\n" for n in names[:-1]))
    (root / "val.txt").write_text(f"{names[-1]}\n")
    return root


def copy_pairs(tmp_path: Path, dataset: str, names: list[str], size: tuple[int, int] | None = None) -> tuple[Path, Path]:
    ir_dir, vi_dir = tmp_path / "ir", tmp_path / "vi"
    for folder in (ir_dir, vi_dir):
        folder.mkdir(exist_ok=True)
    for name in names:
        for modality, folder in (("ir", ir_dir), ("vi", vi_dir)):
            source = shared_data(dataset, modality, name)
            if size is None:
                shutil.copy(source, folder / name)
            else:
                cv2.imwrite(str(folder / name), cv2.resize(cv2.imread(str(source), cv2.IMREAD_UNCHANGED), size))
    return ir_dir, vi_dir
