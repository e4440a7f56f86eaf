"""Detections of one image: boxes, scores, classes, and where each box came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ums.taxonomy import ClassMapping

if TYPE_CHECKING:
    from ums.core.records import LabelRecord

REPEAT_IOU = 0.5  # an automatic box this close to a kept one is the same object


@dataclass
class Detections:
    boxes: np.ndarray  # (N, 4) float32, x0 y0 x1 y1 in pixels
    scores: np.ndarray  # (N,) float32
    classes: np.ndarray  # (N,) int64, ids of ``taxonomy``
    taxonomy: str
    # per box, the score each modality gave it (absent: that modality did not see it)
    provenance: list[dict[str, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, np.float32).reshape(-1)
        self.classes = np.asarray(self.classes, np.int64).reshape(-1)
        if not len(self.boxes) == len(self.scores) == len(self.classes):
            raise ValueError("boxes, scores and classes must have the same length")

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def empty(cls, taxonomy: str) -> Detections:
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0), taxonomy)

    def select(self, keep: np.ndarray) -> Detections:
        keep = np.asarray(keep)
        indices = np.flatnonzero(keep) if keep.dtype == bool else keep
        provenance = [self.provenance[i] for i in indices] if self.provenance else []
        return Detections(self.boxes[indices], self.scores[indices], self.classes[indices], self.taxonomy, provenance)

    def mapped(self, mapping: ClassMapping) -> Detections:
        """Classes translated to ``mapping.target``; boxes of classes without a counterpart dropped."""
        if mapping.source.name != self.taxonomy:
            raise ValueError(f"mapping from {mapping.source.name} applied to {self.taxonomy} detections")
        target = mapping.map_array(self.classes)
        kept = self.select(target >= 0)
        kept.classes = target[target >= 0]
        kept.taxonomy = mapping.target.name
        return kept

    @classmethod
    def from_yolo_txt(cls, path: Path, width: int, height: int, taxonomy: str) -> Detections:
        """A YOLO label file (``cls cx cy w h`` normalised; empty or without a final newline is fine)."""
        rows = [line.split() for line in Path(path).read_text().splitlines() if line.strip()]
        if not rows:
            return cls.empty(taxonomy)
        values = np.array(rows, dtype=np.float64)
        cx, cy, w, h = values[:, 1] * width, values[:, 2] * height, values[:, 3] * width, values[:, 4] * height
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
        return cls(boxes, np.ones(len(values)), values[:, 0].astype(np.int64), taxonomy)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) intersection over union of xyxy boxes."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    intersection = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda boxes: (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])  # noqa: E731
    return intersection / np.maximum(area(a)[:, None] + area(b)[None, :] - intersection, 1e-9)


def drop_repeats(labels: list[LabelRecord], kept: list[LabelRecord]) -> list[LabelRecord]:
    """New automatic labels minus those that repeat a kept (human or reviewed) box, whatever its class:
    a human who relabelled a car as a truck must not get the car back next to it."""
    if not kept:
        return labels
    kept_boxes = np.array([label.box for label in kept]).reshape(-1, 4)
    return [label for label in labels if not (box_iou(np.array([label.box]), kept_boxes)[0] >= REPEAT_IOU).any()]
