"""What a run leaves to read: metrics.csv (one row per logged step), validation.csv, TensorBoard
events, curves.png (loss terms and validation metrics) and samples/epoch_NNN.png."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from ums.core.atomic import write_bytes, write_text


class RunRecords:
    def __init__(self, out: Path, resume_step: int = 0, tensorboard: bool = True):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.steps = self._read_csv(self.out / "metrics.csv", resume_step, "step")
        self.validation = self._read_csv(self.out / "validation.csv", resume_step, "step")
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.out / "tensorboard"), purge_step=resume_step + 1)
            except ImportError:  # tensorboard is a dependency; a trimmed install still trains
                self.writer = None

    @staticmethod
    def _read_csv(path: Path, resume_step: int, key: str) -> list[dict]:
        if not path.is_file():
            return []
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        # a resumed run rewrites what came after its checkpoint
        return [{k: float(v) for k, v in row.items() if v != ""} for row in rows if float(row[key]) <= resume_step]

    def log_step(self, row: dict[str, float]) -> None:
        self.steps.append(row)
        self._write_csv(self.out / "metrics.csv", self.steps)
        if self.writer is not None:
            for name, value in row.items():
                if name not in ("step", "epoch"):
                    self.writer.add_scalar(f"train/{name}", value, int(row["step"]))

    def log_validation(self, row: dict[str, float]) -> None:
        self.validation.append(row)
        self._write_csv(self.out / "validation.csv", self.validation)
        if self.writer is not None:
            for name, value in row.items():
                if name not in ("step", "epoch"):
                    self.writer.add_scalar(f"val/{name}", value, int(row["step"]))

    @staticmethod
    def _write_csv(path: Path, rows: list[dict]) -> None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        write_text(path, buffer.getvalue())

    def plot_curves(self) -> Path | None:
        if not self.steps:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names = [k for k in self.steps[-1] if k not in ("step", "epoch", "lr", "samples_per_s")]
        panels = 2 if self.validation else 1
        figure, axes = plt.subplots(1, panels, figsize=(6 * panels, 4), squeeze=False)
        steps = [row["step"] for row in self.steps]
        for name in names:
            axes[0, 0].plot(steps, [row.get(name, np.nan) for row in self.steps], label=name)
        axes[0, 0].set(xlabel="step", ylabel="loss", title="training loss terms", yscale="log")
        axes[0, 0].legend(fontsize=7)
        if self.validation:
            val_steps = [row["step"] for row in self.validation]
            for name in (k for k in self.validation[-1] if k not in ("step", "epoch")):
                axes[0, 1].plot(val_steps, [row.get(name, np.nan) for row in self.validation], marker="o", label=name)
            axes[0, 1].set(xlabel="step", title="validation (fused vs sources)")
            axes[0, 1].legend(fontsize=7)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100)
        plt.close(figure)
        return write_bytes(self.out / "curves.png", buffer.getvalue())

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
