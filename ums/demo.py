"""``make demo``: synth-flight -> ingest -> crop -> align -> report, on an embedded default."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ums.align.stage import AlignConfig, AlignReport, align_workspace
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
    report: Path

    def rows(self) -> list[tuple[str, object]]:
        return [
            ("flight", self.flight),
            ("workspace", self.workspace),
            ("ground truth", self.ground_truth),
            *self.ingest.rows(),
            *self.crop.rows(),
            *self.align.rows(),
            ("report", self.report),
        ]


def run_demo(out: str | Path, n: int = 6, seed: int = 0, show_progress: bool = True) -> DemoResult:
    out = Path(out).resolve()
    flight = out / "flight"
    truth = flight / "groundtruth.json"
    if not truth.exists():  # a finished flight is reused: the demo is resumable like every stage
        synth_flight(flight, SynthFlightConfig(n=n, seed=seed, show_progress=show_progress))
    with Workspace.open(out / "workspace") as workspace:
        ingest = ingest_flight(workspace, flight, IngestConfig(show_progress=show_progress))
        crop = crop_workspace(workspace, CropConfig(show_progress=show_progress))
        align = align_workspace(workspace, AlignConfig(show_progress=show_progress))
        report = write_html_report(workspace)
    return DemoResult(flight, out / "workspace", truth, ingest, crop, align, report)
