"""Stage ``queue``: which captures a reviewer should open first, and why.

Per capture (through the runner, resumable): the evidence against each label (:mod:`ums.evidence`),
candidate misses (warm regions no label covers, and detections no label kept), and from them the
capture's *priority*: the expected number of label errors it holds, the sum of each label's and
each candidate's probability of being an error under a logistic model per kind. The model's
weights are fitted by ``bench/review_queue.py`` on synthetic flights with planted errors and kept
here as :class:`PriorityModel`'s defaults, the one home of the numbers (the bench prints the fit
it would ship; a user may pass their own with ``--config``).

:func:`ums.queue_order.review_order` reads the stored priorities and ranks the captures nobody has reviewed yet;
``rank="cleanlab"`` ranks them instead by cleanlab's object-detection label quality (labels
against the modalities' own detections as predictions), for comparison. Reading the order needs no
stage machinery: :mod:`ums.queue_order`.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ums import evidence as ev
from ums.camera import CameraProfile
from ums.detections import box_iou
from ums.core.atomic import read_image
from ums.core.executors import ExecutorSettings
from ums.masks import decode_rle
from ums.core.records import LabelRecord, StageResult
from ums.core.runner import CaptureStage, StageReport, Task, run_capture_stage
from ums.core.stage_names import ALIGN as ALIGN_STAGE
from ums.core.stage_names import AUTOLABEL as AUTOLABEL_STAGE
from ums.core.stage_names import CROP as CROP_STAGE
from ums.core.stage_names import QUEUE as STAGE
from ums.taxonomy import DATASET_TAXONOMY, load_taxonomy
from ums.core.workspace import Workspace

EVIDENCE_VERSION = "2"  # bump when evidence changes meaning: stored results are then recomputed
CLASS_DISAGREEMENT = "modalities disagree on class"
DETECTED_UNLABELLED = "detected, unlabelled"
LABEL_EVIDENCE = (*ev.EVIDENCE_NAMES, CLASS_DISAGREEMENT)
UNLABELLED_DETECTION_IOU = 0.3  # a detection overlapping no label more than this is a candidate miss
SAME_OBJECT_IOU = 0.5


class PriorityModel(BaseModel):
    """Logistic models: P(a label is wrong | its evidence) and P(a candidate is a missed object).

    Fitted by ``python bench/review_queue.py --fit`` on planted-error flights (seeds 100-105, day
    and night, 55-125 m); bench/RESULTS.md records the fit and its figures on flights it never saw."""

    model_config = ConfigDict(extra="forbid")

    label_bias: float = -8.154
    # evidence the fit could not weigh (no planted error carried it: masks, dark frames, weak
    # detectors, the border) keeps a prior weight, set by hand
    label_weights: dict[str, float] = Field(default_factory=lambda: {
        ev.ONE_MODALITY: 1.343, ev.ONE_MODALITY_DARK: 0.5, ev.ONE_MODALITY_COLD: 0.258, ev.LOW_SCORE: 1.0,
        ev.MASK_MISMATCH: 1.0, ev.ON_BORDER: 0.5, ev.TOO_SMALL: 0.5, ev.SIZE_UNLIKE_CLASS: 6.024, ev.NOT_WARM: 3.926,
        ev.NOT_VISIBLE: 0.996, ev.OFF_OBJECT: 4.217, CLASS_DISAGREEMENT: 2.356})
    label_score_weight: float = 2.793  # times (1 - merged score)
    candidate_bias: float = -4.316
    candidate_contrast_weight: float = 0.255  # times the peak contrast (robust sigmas, capped at 20)
    # no unlabelled detection in the training flights was a false alarm, so these stay as set by hand
    detection_bias: float = -1.5
    detection_score_weight: float = 3.0  # times the best score a modality gave the unlabelled detection

    def label_probability(self, names: list[str], score: float | None) -> float:
        logit = self.label_bias + sum(self.label_weights.get(name, 0.0) for name in names)
        logit += self.label_score_weight * (1.0 - (score if score is not None else 1.0))
        return _sigmoid(logit)

    def candidate_probability(self, contrast: float) -> float:
        return _sigmoid(self.candidate_bias + self.candidate_contrast_weight * min(contrast, 20.0))

    def detection_probability(self, score: float) -> float:
        return _sigmoid(self.detection_bias + self.detection_score_weight * score)


class QueueConfig(BaseModel):
    """Settings of ``ums queue`` (``pipelines/queue.yaml`` holds the defaults)."""

    model_config = ConfigDict(extra="forbid")

    priority: PriorityModel = Field(default_factory=PriorityModel)
    profile: str = Field("m30t", description="camera profile: the thermal focal length gives the ground sample distance")


class QueueLabel(BaseModel):
    id: int
    class_name: str
    box: tuple[float, float, float, float]
    score: float | None
    provenance: dict[str, float]
    mask: dict | None = None


class QueueTask(Task):
    labels: list[QueueLabel]
    detections: dict[str, list[list[float]]]  # per modality, [x0, y0, x1, y1, score, class id]
    class_names: dict[int, str]
    counts: str | None  # raw thermal counts on the aligned grid (crop's ir16), or the 8-bit image
    visible: str  # the aligned visible image
    metres_per_px: float | None
    config: QueueConfig


class Evidence(StageResult):
    """What the queue stores per capture."""

    priority: float  # expected number of label errors
    labels: dict[str, dict] = Field(default_factory=dict)  # label id -> {evidence, p_error, warmth}
    candidates: list[dict] = Field(default_factory=list)  # possible misses, with their reason and p_miss
    reasons: list[str] = Field(default_factory=list)  # what a reviewer reads, strongest first


@dataclass
class QueueReport(StageReport):
    row_names = ("captures weighed now", "unchanged (kept)", "failed")


def queue_workspace(workspace: Workspace, config: QueueConfig | None = None,
                    executor: ExecutorSettings | None = None) -> QueueReport:
    """Weigh the evidence of every labelled capture that changed since it was last weighed."""
    return run_capture_stage(workspace, QUEUE, config or QueueConfig(), QueueReport(), executor)


def plan(workspace: Workspace, config: QueueConfig) -> list[QueueTask]:
    names = load_taxonomy(DATASET_TAXONOMY).names
    focal_px = thermal_focal_px(config.profile)
    tasks = []
    for capture, align in workspace.captures_with(ALIGN_STAGE):
        results = workspace.stage_results(capture.capture_id)
        crop, autolabel = results.get(CROP_STAGE, {}), results.get(AUTOLABEL_STAGE, {})
        labels = [_queue_label(label, names) for label in workspace.labels(capture.capture_id) if not label.excluded]
        detections = autolabel.get("per_modality", {}) if autolabel.get("status") == "done" else {}
        counts = crop.get("files", {}).get("ir16") or align["files"].get("ir")
        task = QueueTask(key=capture.capture_id, capture_id=capture.capture_id, workspace_root=workspace.root,
                         file=capture.frames["T"].path, labels=labels, detections=detections, class_names=names,
                         counts=counts, visible=align["files"]["vis"], config=config,
                         metres_per_px=metres_per_px(crop, focal_px))
        tasks.append(task.model_copy(update={"fingerprint": _fingerprint(task, align, crop)}))
    return tasks


def process(task: QueueTask) -> Evidence:
    counts = read_image(task.workspace_root / task.counts, cv2.IMREAD_UNCHANGED) if task.counts else None
    visible = read_image(task.workspace_root / task.visible, cv2.IMREAD_COLOR)
    if visible is None:
        raise ValueError(f"cannot decode the aligned image {task.visible}: run `ums align` again")
    valid = ev.valid_area(visible)
    dark = ev.visible_is_dark(visible, valid)
    scene = ev.thermal_scene(counts, task.metres_per_px, valid, visible) if counts is not None and task.metres_per_px else None
    model = task.config.priority
    labels, reasons = {}, []
    for label in task.labels:
        names = _label_evidence(label, task, scene, valid, dark)
        probability = model.label_probability(names, label.score)
        labels[str(label.id)] = {"evidence": names, "p_error": round(probability, 4)}
        reasons += [(probability, f"{label.class_name} #{label.id}: {', '.join(names)}")] if names else []
    candidates = _candidates(task, scene, valid)
    reasons += [(c["p_miss"], f"{c['reason']} at ({c['box'][0]:.0f}, {c['box'][1]:.0f})") for c in candidates]
    priority = sum(item["p_error"] for item in labels.values()) + sum(c["p_miss"] for c in candidates)
    return Evidence(priority=round(priority, 4), labels=labels, candidates=candidates,
                    reasons=[text for _, text in sorted(reasons, key=lambda r: -r[0])])


def _label_evidence(label: QueueLabel, task: QueueTask, scene, valid, dark: bool) -> list[str]:
    mask = decode_rle(label.mask) if label.mask else None
    box = ev.BoxLabel(label.box, label.class_name, label.score, label.provenance, mask)
    names = ev.label_evidence(box, scene, valid, dark).names
    if _classes_disagree(label, task):
        names.append(CLASS_DISAGREEMENT)
    return names


def _classes_disagree(label: QueueLabel, task: QueueTask) -> bool:
    """A modality's detection of the same object (IoU >= 0.5) names another class."""
    for rows in task.detections.values():
        if not rows:
            continue
        detections = np.asarray(rows, np.float64)
        overlap = box_iou(np.array([label.box]), detections[:, :4])[0] >= SAME_OBJECT_IOU
        if any(task.class_names.get(int(cls)) != label.class_name for cls in detections[overlap, 5]):
            return True
    return False


def _candidates(task: QueueTask, scene, valid) -> list[dict]:
    """Possible misses: warm regions no label covers, and detections no label kept."""
    model = task.config.priority
    boxes = [label.box for label in task.labels]
    found = []
    for candidate in (ev.warm_candidates(scene, boxes, valid) if scene is not None else []):
        found.append({**candidate.as_dict(), "reason": ev.WARM_UNLABELLED,
                      "p_miss": round(model.candidate_probability(candidate.contrast), 4)})
    for box, score, class_id in _unlabelled_detections(task, boxes + [c["box"] for c in found]):
        found.append({"box": [round(v, 2) for v in box], "class": task.class_names.get(class_id), "score": round(score, 4),
                      "reason": DETECTED_UNLABELLED, "p_miss": round(model.detection_probability(score), 4)})
    return found


def _unlabelled_detections(task: QueueTask, covered: list) -> list[tuple[list[float], float, int]]:
    rows = [row for modality_rows in task.detections.values() for row in modality_rows]
    if not rows:
        return []
    detections = np.asarray(rows, np.float64)
    detections = detections[np.argsort(-detections[:, 4], kind="stable")]
    kept: list[tuple[list[float], float, int]] = []
    for row in detections:
        others = np.array(list(covered) + [box for box, _, _ in kept], np.float64).reshape(-1, 4)
        if len(others) and box_iou(row[None, :4], others)[0].max() > UNLABELLED_DETECTION_IOU:
            continue
        kept.append((row[:4].tolist(), float(row[4]), int(row[5])))
    return kept


# -- helpers ---------------------------------------------------------------------------------------
def _queue_label(label: LabelRecord, names: dict[int, str]) -> QueueLabel:
    return QueueLabel(id=label.id, class_name=names.get(label.class_id, str(label.class_id)), box=label.box,
                      score=label.score, provenance=label.provenance, mask=label.mask)


@lru_cache(maxsize=4)
def thermal_focal_px(profile: str) -> float:
    return CameraProfile.load(profile).cameras["T"].focal_px


def metres_per_px(crop: dict, thermal_focal_px: float) -> float | None:
    """Ground sample distance on the aligned grid: range over the thermal focal length, times the
    thermal pixels one output pixel spans."""
    distance = crop.get("distance_m")
    if not distance or not math.isfinite(distance) or distance <= 0:
        return None
    output_to_thermal = np.asarray(crop.get("output_to_thermal", np.eye(3)), np.float64)
    return float(distance / thermal_focal_px * math.sqrt(abs(np.linalg.det(output_to_thermal[:2, :2]))))


def _fingerprint(task: QueueTask, align: dict, crop: dict) -> str:
    inputs = task.model_dump_json(include={"labels", "detections", "counts", "visible", "metres_per_px", "config"})
    state = json.dumps([EVIDENCE_VERSION, align.get("render_fingerprint"), crop.get("fingerprint")])
    return hashlib.sha256((inputs + state).encode()).hexdigest()[:16]


def _sigmoid(value: float) -> float:
    return 1.0 / (1.0 + math.exp(-value))


QUEUE = CaptureStage(STAGE, plan, process, nothing_to_do="no aligned pair (run `ums align`, then `ums autolabel` or "
                     "`ums labels import`)")
