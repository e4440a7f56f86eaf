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
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from pydantic import ConfigDict, Field

from ums.core.atomic import write_image
from ums.detections import Detections, drop_repeats
from ums.autolabel.detectors import DetectorConfig, load_detector
from ums.autolabel.sam import SamConfig, load_sam, segment_boxes
from ums.masks import decode_rle, encode_rle, semantic_map
from ums.previews import preview
from ums.autolabel.merge import MergeConfig, merge_modalities
from ums.core.records import AutolabelResult, LabelRecord
from ums.core.executors import ExecutorSettings
from ums.core.runner import (
    CaptureStage,
    Outcome,
    StageContext,
    StageReport,
    Task,
    outputs_intact,
    record_capture_outcome,
    run_capture_stage,
)
from ums.core.stage_names import ALIGN as ALIGN_STAGE
from ums.core.stage_names import AUTOLABEL as STAGE
from ums.taxonomy import DATASET_TAXONOMY as TARGET_TAXONOMY
from ums.taxonomy import load_mapping, load_taxonomy
from ums.core.workspace import Workspace

class AutolabelConfig(ExecutorSettings):
    """Settings of ``ums autolabel`` (``pipelines/autolabel.yaml`` holds the defaults)."""

    model_config = ConfigDict(extra="forbid")

    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    sam: SamConfig = Field(default_factory=SamConfig)
    masks: bool = True
    merge: MergeConfig = Field(default_factory=MergeConfig)
    force: bool = Field(False, description="replace unreviewed automatic labels of labelled captures")


@dataclass
class AutolabelReport(StageReport):
    labels: int = 0
    per_class: dict[str, int] = field(default_factory=dict)
    other_models: dict[str, int] = field(default_factory=dict)  # pairs kept that another model labelled
    class_names: list[str] = field(default_factory=lambda: load_taxonomy(TARGET_TAXONOMY).names, repr=False)

    @property
    def labelled(self) -> int:
        return self.done

    def rows(self) -> list[tuple[str, object]]:
        rows = [("pairs labelled now", self.done), ("already labelled (skipped)", self.skipped),
                ("failed", self.failed), ("automatic labels written", self.labels)]
        if self.not_run:
            rows.append(("not run (rerun to resume)", self.not_run))
        rows += [(f"  {name}", count) for name, count in sorted(self.per_class.items())]
        return rows


class AutolabelTask(Task):
    align_files: dict[str, str]
    protected: list[LabelRecord]  # human and reviewed labels: they stay, and new boxes may not repeat them
    config: AutolabelConfig
    model: str


def autolabel_workspace(workspace: Workspace, config: AutolabelConfig) -> AutolabelReport:
    """Label every aligned pair not labelled yet (all of them with ``force``)."""
    _models(config.detector, config.sam if config.masks else None)  # fails here, naming --detector, not once per pair
    return run_capture_stage(workspace, AUTOLABEL, config, AutolabelReport())


def plan(workspace: Workspace, config: AutolabelConfig) -> list[AutolabelTask]:
    model = _model_name(config)
    return [
        AutolabelTask(key=capture.capture_id, capture_id=capture.capture_id, workspace_root=workspace.root,
                      fingerprint=model, file=capture.frames["T"].path, align_files=align["files"],
                      inputs=align.get("outputs") or {}, inputs_stage=ALIGN_STAGE,
                      protected=[label for label in workspace.labels(capture.capture_id) if label.protected],
                      config=config, model=model)
        for capture, align in workspace.captures_with(ALIGN_STAGE)
    ]


def labelled(context: StageContext, task: AutolabelTask) -> dict | None:
    """A labelled pair stays as it is, whatever model labelled it, unless ``force``: relabelling
    replaces automatic labels a person may already have looked at."""
    if context.config.force:
        return None
    previous = context.workspace.stage_result(task.key, STAGE)
    if previous is None or previous["status"] != "done":
        return None
    return previous if outputs_intact(context.workspace, previous) else None


def record_labels(context: StageContext, outcome: Outcome) -> None:
    """The new automatic labels (human and reviewed ones untouched), then the stage result."""
    report: AutolabelReport = context.report
    if outcome.current:
        model = outcome.result.get("model")
        if model and model != outcome.task.model:
            report.other_models[model] = report.other_models.get(model, 0) + 1
    elif outcome.result is not None:
        result = outcome.result
        result.written = context.workspace.replace_auto_labels(outcome.task.key, result.labels, select=drop_repeats)
        report.labels += result.written
        for label in result.labels:
            name = report.class_names[label.class_id]
            report.per_class[name] = report.per_class.get(name, 0) + 1
    record_capture_outcome(context, outcome)


def other_model_notice(context: StageContext) -> None:
    """Say when the pairs kept were labelled by another model than the one asked for now."""
    report: AutolabelReport = context.report
    model = _model_name(context.config)
    report.notices += [f"{count} pair(s) were labelled by {name}, not {model}: pass --force to relabel them "
                       "(human and reviewed labels stay)" for name, count in sorted(report.other_models.items())]


def _uses_gpu(config: AutolabelConfig) -> bool:
    return any(device.startswith("cuda") for device in (config.detector.device, config.sam.device))


def process(task: AutolabelTask) -> AutolabelResult:
    """Detect on both images, merge, segment, and draw the pair's label outputs."""
    config = task.config
    detector, predictor = _models(config.detector, config.sam if config.masks else None)
    mapping = load_mapping(config.detector.taxonomy, TARGET_TAXONOMY)
    thermal, visible = _pair_images(task)
    per_modality = {
        "visible": detector.detect(visible).mapped(mapping),
        "thermal": detector.detect(thermal).mapped(mapping),
    }
    merged = merge_modalities(per_modality, thermal.shape[1], thermal.shape[0], config.merge)
    masks = _masks(predictor, config.sam.image, visible, thermal, merged) if predictor else None
    labels = [
        LabelRecord(taxonomy=TARGET_TAXONOMY, class_id=int(cls), box=tuple(float(v) for v in box),
                    score=float(score), mask=encode_rle(masks[i]) if masks is not None else None,
                    model=task.model, provenance=merged.provenance[i])
        for i, (box, score, cls) in enumerate(zip(merged.boxes, merged.scores, merged.classes))
    ]
    fresh = drop_repeats(labels, task.protected)
    files = _write_outputs(task, visible, thermal, task.protected + fresh)
    return AutolabelResult(model=task.model, detections={k: len(v) for k, v in per_modality.items()},
                           per_modality={k: detection_rows(v) for k, v in per_modality.items()},
                           merged=len(merged), masks=masks is not None, files=files, labels=fresh)


def detection_rows(detections: Detections) -> list[list[float]]:
    return [[*(round(float(v), 2) for v in box), round(float(score), 4), int(cls)]
            for box, score, cls in zip(detections.boxes, detections.scores, detections.classes)]


def _models(detector_config: DetectorConfig, sam_config: SamConfig | None):
    """The detector and SAM, loaded once per process (a pool or Dask worker keeps them for every task)."""
    return _load_models(detector_config.model_dump_json(), sam_config.model_dump_json() if sam_config else None)


@lru_cache(maxsize=2)
def _load_models(detector_json: str, sam_json: str | None):
    detector = load_detector(DetectorConfig.model_validate_json(detector_json))
    return detector, load_sam(SamConfig.model_validate_json(sam_json)) if sam_json else None


def _pair_images(task: AutolabelTask) -> tuple[np.ndarray, np.ndarray]:
    thermal = cv2.imread(str(task.workspace_root / task.align_files["ir"]), cv2.IMREAD_GRAYSCALE)
    visible = cv2.imread(str(task.workspace_root / task.align_files["vis"]), cv2.IMREAD_COLOR)
    if thermal is None or visible is None:
        raise ValueError(f"cannot read the aligned pair of {task.key} (rerun `ums align`)")
    return thermal, visible


def _masks(predictor, rule: str, visible: np.ndarray, thermal: np.ndarray, merged: Detections) -> np.ndarray:
    if rule != "best":
        return segment_boxes(predictor, visible if rule == "visible" else thermal, merged)[0]
    from_visible = segment_boxes(predictor, visible, merged)[0]
    from_thermal = segment_boxes(predictor, thermal, merged)[0]
    thermal_better = np.array([p.get("thermal", 0.0) > p.get("visible", 0.0) for p in merged.provenance], bool)
    return np.where(thermal_better[:, None, None], from_thermal, from_visible)


def _write_outputs(task: AutolabelTask, visible: np.ndarray, thermal: np.ndarray,
                   labels: list[LabelRecord]) -> dict[str, str]:
    h, w = thermal.shape
    with_masks = [label for label in labels if label.mask]
    masks = np.array([decode_rle(label.mask) for label in with_masks]).reshape(-1, h, w)
    semantic = semantic_map(masks, np.array([label.class_id for label in with_masks]),
                            np.array([label.score or 1.0 for label in with_masks]), (h, w))
    folder = task.output_dir(STAGE)
    write_image(folder / "semantic.png", semantic, durable=False)
    write_image(folder / "preview.jpg", preview(visible, thermal, labels, semantic), durable=False)
    return {"semantic": task.relative(folder / "semantic.png"), "preview": task.relative(folder / "preview.jpg")}


def _model_name(config: AutolabelConfig) -> str:
    """The detector (and SAM) file names with a short content hash: which model made a label."""
    def describe(path: Path | None) -> str:
        if path is None:
            return "none"
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:8]
        return f"{Path(path).name}@{digest}"

    name = describe(config.detector.weights)
    return f"{name}+{describe(config.sam.checkpoint)}" if config.masks else name


AUTOLABEL = CaptureStage(STAGE, plan, process, current=labelled, record=record_labels, finish=other_model_notice,
                         gpu=_uses_gpu, nothing_to_do="no aligned pair (run `ums align` first)")
