"""Stage ``autolabel``: detect on both modalities of every aligned pair, merge, segment, store.

Per pair: the detector runs on the aligned visible image and on the thermal image; detections are
mapped to the UMS taxonomy (``labels/mappings.yaml``), merged across modalities with provenance,
and, unless masks are off, segmented by SAM prompted with all boxes at once. Labels land in the
workspace as automatic labels; human and reviewed labels are never touched. A capture already
labelled is skipped unless ``force``, which replaces only its unreviewed automatic labels.
Outputs per pair in ``autolabel/<capture_id>/``: ``semantic.png`` (0 = background, UMS id + 1)
and ``preview.jpg`` (boxes and masks drawn on both images, for people to look at).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ums.align.stage import STAGE as ALIGN_STAGE
from ums.atomic import write_image
from ums.autolabel.detections import Detections
from ums.autolabel.detectors import DetectorConfig, load_detector
from ums.autolabel.masks import SamConfig, encode_rle, load_sam, segment_boxes, semantic_map
from ums.autolabel.merge import MergeConfig, merge_modalities
from ums.progress import progress_bar
from ums.records import CaptureRecord, Issue, LabelRecord
from ums.taxonomy import load_mapping, load_taxonomy
from ums.workspace import Workspace

STAGE = "autolabel"
TARGET_TAXONOMY = "ums"


class AutolabelConfig(BaseModel):
    """Settings of ``ums autolabel`` (``pipelines/autolabel.yaml`` holds the defaults)."""

    model_config = ConfigDict(extra="forbid")

    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    sam: SamConfig = Field(default_factory=SamConfig)
    masks: bool = True
    merge: MergeConfig = Field(default_factory=MergeConfig)
    force: bool = Field(False, description="replace unreviewed automatic labels of labelled captures")
    show_progress: bool = True


@dataclass
class AutolabelReport:
    labelled: int = 0
    skipped: int = 0
    failed: int = 0
    labels: int = 0
    per_class: dict[str, int] = field(default_factory=dict)
    issues: list[Issue] = field(default_factory=list)

    def rows(self) -> list[tuple[str, object]]:
        rows = [("pairs labelled now", self.labelled), ("already labelled (skipped)", self.skipped),
                ("failed", self.failed), ("automatic labels written", self.labels)]
        rows += [(f"  {name}", count) for name, count in sorted(self.per_class.items())]
        return rows


def autolabel_workspace(workspace: Workspace, config: AutolabelConfig) -> AutolabelReport:
    detector = load_detector(config.detector)  # fails here, naming --detector, not once per pair
    predictor = load_sam(config.sam) if config.masks else None
    mapping = load_mapping(config.detector.taxonomy, TARGET_TAXONOMY)
    names = load_taxonomy(TARGET_TAXONOMY).names
    model_name = _model_name(config)
    run_id = workspace.start_run(STAGE, config.model_dump(mode="json"))
    report = AutolabelReport()
    for capture in progress_bar(_aligned(workspace), "autolabel", enabled=config.show_progress):
        previous = workspace.stage_results(capture.capture_id).get(STAGE)
        if previous and previous["status"] == "done" and not config.force:
            report.skipped += 1
            continue
        try:
            thermal, visible = _pair_images(workspace, capture)
        except ValueError as exc:
            report.failed += 1
            report.issues.append(Issue(stage=STAGE, file=capture.frames["T"].path, capture_id=capture.capture_id,
                                       message=str(exc)))
            continue
        per_modality = {
            "visible": detector.detect(visible).mapped(mapping),
            "thermal": detector.detect(thermal).mapped(mapping),
        }
        merged = merge_modalities(per_modality, thermal.shape[1], thermal.shape[0], config.merge)
        masks = _masks(predictor, config.sam.image, visible, thermal, merged) if predictor else None
        labels = [
            LabelRecord(taxonomy=TARGET_TAXONOMY, class_id=int(cls), box=tuple(float(v) for v in box),
                        score=float(score), mask=encode_rle(masks[i]) if masks is not None else None,
                        model=model_name, provenance=merged.provenance[i])
            for i, (box, score, cls) in enumerate(zip(merged.boxes, merged.scores, merged.classes))
        ]
        written = workspace.replace_auto_labels(capture.capture_id, labels)
        files = _write_outputs(workspace, capture, visible, thermal, workspace.labels(capture.capture_id))
        workspace.record_stage_result(capture.capture_id, STAGE, "done", {
            "model": model_name, "detections": {k: len(v) for k, v in per_modality.items()},
            "merged": len(merged), "written": written, "masks": masks is not None, "files": files})
        report.labelled += 1
        report.labels += written
        for cls in merged.classes:
            report.per_class[names[int(cls)]] = report.per_class.get(names[int(cls)], 0) + 1
    workspace.replace_issues(STAGE, "workspace", report.issues)
    workspace.finish_run(run_id, {k: str(v) for k, v in report.rows()})
    return report


def _aligned(workspace: Workspace) -> list[CaptureRecord]:
    return [c for c in workspace.captures()
            if (workspace.stage_results(c.capture_id).get(ALIGN_STAGE) or {}).get("status") == "done"]


def _pair_images(workspace: Workspace, capture: CaptureRecord) -> tuple[np.ndarray, np.ndarray]:
    files = workspace.stage_results(capture.capture_id)[ALIGN_STAGE]["files"]
    thermal = cv2.imread(str(workspace.absolute(files["ir"])), cv2.IMREAD_GRAYSCALE)
    visible = cv2.imread(str(workspace.absolute(files["vis"])), cv2.IMREAD_COLOR)
    if thermal is None or visible is None:
        raise ValueError(f"autolabel: cannot read the aligned pair of {capture.capture_id} (rerun `ums align`)")
    return thermal, visible


def _masks(predictor, rule: str, visible: np.ndarray, thermal: np.ndarray, merged: Detections) -> np.ndarray:
    if rule != "best":
        return segment_boxes(predictor, visible if rule == "visible" else thermal, merged)[0]
    from_visible = segment_boxes(predictor, visible, merged)[0]
    from_thermal = segment_boxes(predictor, thermal, merged)[0]
    thermal_better = np.array([p.get("thermal", 0.0) > p.get("visible", 0.0) for p in merged.provenance], bool)
    return np.where(thermal_better[:, None, None], from_thermal, from_visible)


def _write_outputs(workspace: Workspace, capture: CaptureRecord, visible: np.ndarray, thermal: np.ndarray,
                   labels: list[LabelRecord]) -> dict[str, str]:
    from ums.autolabel.masks import decode_rle

    h, w = thermal.shape
    with_masks = [label for label in labels if label.mask]
    masks = np.array([decode_rle(label.mask) for label in with_masks]).reshape(-1, h, w)
    semantic = semantic_map(masks, np.array([label.class_id for label in with_masks]),
                            np.array([label.score or 1.0 for label in with_masks]), (h, w))
    folder = workspace.stage_dir(STAGE) / capture.capture_id
    write_image(folder / "semantic.png", semantic)
    write_image(folder / "preview.jpg", preview(visible, thermal, labels, semantic))
    return {"semantic": str((folder / "semantic.png").relative_to(workspace.root)),
            "preview": str((folder / "preview.jpg").relative_to(workspace.root))}


def preview(visible: np.ndarray, thermal: np.ndarray, labels: list[LabelRecord], semantic: np.ndarray) -> np.ndarray:
    """Boxes (human labels thick) and tinted masks on both images side by side."""
    names = load_taxonomy(TARGET_TAXONOMY).names
    palette = load_taxonomy(TARGET_TAXONOMY).palette()
    panels = []
    for image in (visible, cv2.cvtColor(thermal, cv2.COLOR_GRAY2BGR)):
        tinted = image.copy()
        painted = semantic > 0
        tinted[painted] = (0.5 * tinted[painted] + 0.5 * palette[semantic[painted]]).astype(np.uint8)
        for label in labels:
            colour = tuple(int(c) for c in palette[label.class_id + 1])
            x0, y0, x1, y1 = (int(round(v)) for v in label.box)
            cv2.rectangle(tinted, (x0, y0), (x1, y1), colour, 2 if label.protected else 1)
            text = f"{names[label.class_id]} {label.score:.2f}" if label.score is not None else names[label.class_id]
            cv2.putText(tinted, text, (x0, max(10, y0 - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.35, colour, 1, cv2.LINE_AA)
        panels.append(tinted)
    return np.hstack(panels)


def _model_name(config: AutolabelConfig) -> str:
    """The detector (and SAM) file names with a short content hash: which model made a label."""
    def describe(path: Path | None) -> str:
        if path is None:
            return "none"
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:8]
        return f"{Path(path).name}@{digest}"

    name = describe(config.detector.weights)
    return f"{name}+{describe(config.sam.checkpoint)}" if config.masks else name
