"""``make demo``: synth-flight -> ingest -> crop -> align -> autolabel -> review dataset -> split ->
export -> report -> a few TSJNet training steps -> fused pairs and their metrics, on an embedded default."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ums.align.stage import AlignConfig, AlignReport, align_workspace
from ums.autolabel.stage import AutolabelConfig, AutolabelReport, autolabel_workspace
from ums.core.config import default_config_path, load_config
from ums.core.executors import ExecutorSettings
from ums.export import export_workspace
from ums.review import build_review_dataset
from ums.split import SplitConfig, SplitReport, split_workspace
from ums.crop import CropConfig, CropReport, crop_workspace
from ums.ingest import IngestConfig, IngestReport, ingest_flight
from ums.report import write_html_report
from ums.synth import SynthFlightConfig, synth_flight
from ums.core.workspace import Workspace


@dataclass
class DemoResult:
    flight: Path
    workspace: Path
    ground_truth: Path
    ingest: IngestReport
    crop: CropReport
    align: AlignReport
    autolabel: AutolabelReport | str  # the report, or why the step was skipped
    review_dataset: str
    split: SplitReport
    export: Path
    report: Path
    fusion: dict | str = "not run"  # the TSJNet step's figures, or why it was skipped

    def rows(self) -> list[tuple[str, object]]:
        return [
            ("flight", self.flight),
            ("workspace", self.workspace),
            ("ground truth", self.ground_truth),
            *self.ingest.rows(),
            *self.crop.rows(),
            *self.align.rows(),
            *(self.autolabel.rows() if not isinstance(self.autolabel, str) else [("autolabel", "skipped (see below)")]),
            ("review dataset (FiftyOne)", f"{self.review_dataset}: `ums review -w {self.workspace}` serves it "
                                          "on http://127.0.0.1:5151/"),
            *self.split.rows(),
            ("export (msrs layout + card)", self.export),
            ("report", self.report),
            *self.fusion_rows(),
        ]

    def fusion_rows(self) -> list[tuple[str, object]]:
        if isinstance(self.fusion, str):
            return [("tsjnet (tiny, fusion terms)", self.fusion)]
        f = self.fusion
        scores = " | ".join(f"{method}: " + ", ".join(f"{k} {v:.3f}" for k, v in values.items())
                            for method, values in f["metrics"].items())
        return [("tsjnet train (tiny, fusion terms)", f"{f['steps']} steps on {f['pairs']} pairs, loss "
                 f"{f['first_loss']:.2f} -> {f['last_loss']:.2f}; curves {f['curves']}"),
                ("tsjnet fuse + eval", f"{f['fused']}: {scores}")]


def run_demo(out: str | Path, n: int = 6, seed: int = 0, show_progress: bool = True,
             autolabel: AutolabelConfig | None = None) -> DemoResult:
    """The pipeline on a procedural flight. ``autolabel`` defaults to pipelines/autolabel.yaml;
    without detector weights there (none ship with ums) that step says what to pass and is skipped."""
    out = Path(out).resolve()
    flight = out / "flight"
    truth = flight / "groundtruth.json"
    if not truth.exists():  # a finished flight is reused: the demo is resumable like every stage
        synth_flight(flight, SynthFlightConfig(n=n, seed=seed, show_progress=show_progress))
    executor = ExecutorSettings(show_progress=show_progress)
    with Workspace.open(out / "workspace") as workspace:
        ingest = ingest_flight(workspace, flight, IngestConfig(), executor)
        crop = crop_workspace(workspace, CropConfig(), executor)
        align = align_workspace(workspace, AlignConfig(), executor)
        labels = _autolabel_step(workspace, autolabel, executor)
        review = build_review_dataset(workspace).name  # built, not launched: `ums review` serves it
        split = split_workspace(workspace, SplitConfig(max_block_captures=2))  # tiny flight: small blocks
        export_workspace(workspace, out / "export", "msrs", redact=True)
        report = write_html_report(workspace)
    fusion = _fusion_step(out / "export", out, show_progress)
    return DemoResult(flight, out / "workspace", truth, ingest, crop, align, labels, review, split, out / "export",
                      report, fusion)


def _fusion_step(export: Path, out: Path, show_progress: bool, steps: int = 24) -> dict | str:
    """A few steps of the tiny TSJNet on the export (fusion terms only: the joint objective needs local
    Faster R-CNN / DeepLab weights), then its fused pairs and the mean baseline, both scored."""
    from tsjnet.data import discover
    from tsjnet.engine import TrainConfig, train
    from tsjnet.evaluate import evaluate_folders
    from tsjnet.fuse import FuseConfig, fuse_folders

    try:
        split = "train" if len(discover(export, "train").samples) >= 2 else "all"
        config = TrainConfig.load(default_config_path("train-tiny"), out=out / "tsjnet", max_steps=steps,
                                  epochs=1000, show_progress=show_progress,
                                  loss={"detection": 0.0, "segmentation": 0.0},
                                  data={"root": export, "train_split": split, "val_split": "val", "resize": [128, 160]})
        trainer = train(config)
    except (ValueError, FileNotFoundError) as exc:
        return f"skipped: {exc}"
    scores = {}
    for method, weights in (("tsjnet", trainer.out / "tsjnet.safetensors"), ("mean", None)):
        fused = out / "fused" / method
        fuse_folders(export / "ir", export / "vi", fused, FuseConfig(method=method, weights=weights),
                     ExecutorSettings(show_progress=False))
        result = evaluate_folders(export / "ir", export / "vi", fused, names=("SSIM", "VIF", "Qabf", "EN"),
                                  show_progress=False)
        scores[method] = result["mean"]
    losses = [row["loss"] for row in trainer.records.steps]
    return {"steps": trainer.counters.global_step, "pairs": len(trainer.train_set), "first_loss": losses[0],
            "last_loss": losses[-1], "curves": trainer.out / "curves.png", "fused": out / "fused", "metrics": scores}


def _autolabel_step(workspace: Workspace, config: AutolabelConfig | None,
                    executor: ExecutorSettings) -> AutolabelReport | str:
    if config is None:
        config = load_config(AutolabelConfig, default_config_path("autolabel"))
    try:
        return autolabel_workspace(workspace, config, executor)
    except FileNotFoundError as exc:
        return f"skipped: {exc}"
