"""``make demo``: synth-flight -> ingest -> crop -> align -> autolabel -> review dataset -> split ->
export -> report, on an embedded default."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ums.align.stage import AlignConfig, AlignReport, align_workspace
from ums.autolabel.stage import AutolabelConfig, AutolabelReport, autolabel_workspace
from ums.config import default_config_path, load_config
from ums.export import export_workspace
from ums.review import build_review_dataset
from ums.split import SplitConfig, SplitReport, split_workspace
from ums.crop import CropConfig, CropReport, crop_workspace
from ums.ingest import IngestConfig, IngestReport, ingest_flight
from ums.report import write_html_report
from ums.synth import SynthFlightConfig, synth_flight
from ums.workspace import Workspace


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
        ]


def run_demo(out: str | Path, n: int = 6, seed: int = 0, show_progress: bool = True,
             autolabel: AutolabelConfig | None = None) -> DemoResult:
    """The pipeline on a procedural flight. ``autolabel`` defaults to pipelines/autolabel.yaml;
    without detector weights there (none ship with ums) that step says what to pass and is skipped."""
    out = Path(out).resolve()
    flight = out / "flight"
    truth = flight / "groundtruth.json"
    if not truth.exists():  # a finished flight is reused: the demo is resumable like every stage
        synth_flight(flight, SynthFlightConfig(n=n, seed=seed, show_progress=show_progress))
    with Workspace.open(out / "workspace") as workspace:
        ingest = ingest_flight(workspace, flight, IngestConfig(show_progress=show_progress))
        crop = crop_workspace(workspace, CropConfig(show_progress=show_progress))
        align = align_workspace(workspace, AlignConfig(show_progress=show_progress))
        labels = _autolabel_step(workspace, autolabel, show_progress)
        review = build_review_dataset(workspace).name  # built, not launched: `ums review` serves it
        split = split_workspace(workspace, SplitConfig(max_block_captures=2))  # tiny flight: small blocks
        export_workspace(workspace, out / "export", "msrs", redact=True)
        report = write_html_report(workspace)
    return DemoResult(flight, out / "workspace", truth, ingest, crop, align, labels, review, split, out / "export",
                      report)


def _autolabel_step(workspace: Workspace, config: AutolabelConfig | None, show_progress: bool) -> AutolabelReport | str:
    if config is None:
        config = load_config(AutolabelConfig, default_config_path("autolabel"), show_progress=show_progress)
    try:
        return autolabel_workspace(workspace, config)
    except FileNotFoundError as exc:
        return f"skipped: {exc}"
