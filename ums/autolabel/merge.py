"""Cross-modal merging of detections (visible + thermal of one aligned pair) with provenance.

Weighted box fusion (ensemble-boxes) by default: boxes of the same class that overlap are averaged
by score, so a person seen in both images becomes one better-placed box. ``score_rule="max"`` keeps
the best modality's score: an object only the thermal camera sees at night is not halved for the
visible camera's silence. Class-aware NMS is the alternative. Every merged box records the score each
modality gave it.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from ensemble_boxes import weighted_boxes_fusion
from pydantic import BaseModel, ConfigDict, Field
from torchvision.ops import batched_nms

from ums.detections import Detections, box_iou


class MergeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Literal["wbf", "nms"] = "wbf"
    # 0.4 rather than WBF's usual 0.55: "aligned" IR/visible pairs are off by pixels, and on the
    # MSRS labels drawn per view 0.4 merged best (AP@0.5 0.517 vs 0.490 at 0.55; bench/RESULTS.md)
    iou_threshold: float = Field(0.4, gt=0, lt=1)
    score_rule: Literal["max", "avg"] = Field("max", description="WBF score of a fused box")
    min_score: float = Field(0.0, ge=0, le=1)
    weights: dict[str, float] = Field(default_factory=lambda: {"visible": 1.0, "thermal": 1.0})


def merge_modalities(per_modality: dict[str, Detections], width: int, height: int,
                     config: MergeConfig | None = None) -> Detections:
    """One set of detections from several modalities' detections of the same (aligned) scene."""
    config = config or MergeConfig()
    present = {name: d for name, d in per_modality.items() if len(d)}
    taxonomies = {d.taxonomy for d in per_modality.values()}
    if len(taxonomies) > 1:
        raise ValueError(f"map every modality to one taxonomy before merging (got {sorted(taxonomies)})")
    taxonomy = taxonomies.pop() if taxonomies else "ums"
    if not present:
        return Detections.empty(taxonomy)
    if config.method == "wbf":
        merged = _wbf(present, width, height, config, taxonomy)
    else:
        merged = _nms(present, config, taxonomy)
    merged = merged.select(merged.scores >= config.min_score) if config.min_score else merged
    merged.provenance = _provenance(merged, per_modality, config.iou_threshold)
    return merged


def _wbf(present, width, height, config, taxonomy) -> Detections:
    scale = np.array([width, height, width, height], np.float32)
    boxes = [np.clip(d.boxes / scale, 0, 1) for d in present.values()]
    boxes, scores, labels = weighted_boxes_fusion(
        boxes, [d.scores for d in present.values()], [d.classes for d in present.values()],
        weights=[config.weights.get(name, 1.0) for name in present], iou_thr=config.iou_threshold,
        skip_box_thr=0.0, conf_type=config.score_rule)
    return Detections(np.asarray(boxes) * scale, scores, np.asarray(labels).astype(np.int64), taxonomy)


def _nms(present, config, taxonomy) -> Detections:
    boxes = np.concatenate([d.boxes for d in present.values()])
    scores = np.concatenate([d.scores * config.weights.get(name, 1.0) for name, d in present.items()])
    classes = np.concatenate([d.classes for d in present.values()])
    keep = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(classes),
                       config.iou_threshold).numpy()
    return Detections(boxes[keep], scores[keep], classes[keep], taxonomy)


def _provenance(merged: Detections, per_modality: dict[str, Detections], iou_threshold: float) -> list[dict[str, float]]:
    provenance: list[dict[str, float]] = [{} for _ in range(len(merged))]
    for name, detections in per_modality.items():
        overlap = box_iou(merged.boxes, detections.boxes)
        same_class = merged.classes[:, None] == detections.classes[None, :]
        for index in range(len(merged)):
            matches = np.flatnonzero(same_class[index] & (overlap[index] >= iou_threshold))
            if len(matches):
                provenance[index][name] = float(detections.scores[matches].max())
    return provenance
