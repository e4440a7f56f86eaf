"""The review queue's order, read from the ``queue`` stage's stored results (:mod:`ums.queue`
computes them): the captures nobody has reviewed yet, most likely to hold a label error first; or
ranked by cleanlab's object-detection label quality, for comparison. A reader, below the stages:
the report and the CLI use it without loading the stage."""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ums.core.stage_names import AUTOLABEL as AUTOLABEL_STAGE
from ums.core.stage_names import QUEUE as STAGE
from ums.core.stage_names import REVIEW as REVIEW_STAGE
from ums.core.workspace import Workspace
from ums.taxonomy import DATASET_TAXONOMY, load_taxonomy


# -- the order a reviewer sees ---------------------------------------------------------------------
@dataclass
class QueueEntry:
    capture_id: str
    priority: float
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"capture_id": self.capture_id, "priority": self.priority, "reasons": self.reasons}


Rank = Literal["priority", "cleanlab"]
RANKS: tuple[str, ...] = typing.get_args(Rank)


def review_order(workspace: Workspace, rank: Rank = "priority", limit: int | None = None,
                 include_reviewed: bool = False) -> list[QueueEntry]:
    """The weighed captures, most likely to hold an error first (ties in capture order)."""
    reviewed = set() if include_reviewed else {capture_id for capture_id, review in workspace.results_with(REVIEW_STAGE)
                                                if "reviewed" in review.get("tags", [])}
    entries = [QueueEntry(capture_id, float(stored["priority"]), list(stored.get("reasons", [])))
               for capture_id, stored in workspace.results_with(STAGE) if capture_id not in reviewed]
    if rank == "cleanlab":
        scores = cleanlab_quality(workspace, [entry.capture_id for entry in entries])
        for entry, quality in zip(entries, scores):
            entry.priority = round(1.0 - float(quality), 4)
    order = sorted(range(len(entries)), key=lambda i: -entries[i].priority)  # stable: capture order breaks ties
    return [entries[i] for i in order][:limit]


def cleanlab_quality(workspace: Workspace, capture_ids: list[str]) -> np.ndarray:
    """cleanlab's object-detection label quality per capture (1: clean): the labels against the
    modalities' own detections (autolabel's per-modality boxes) as a second model's predictions."""
    from cleanlab.object_detection.rank import get_label_quality_scores

    n_classes = len(load_taxonomy(DATASET_TAXONOMY).names)
    labels, predictions = [], []
    for capture_id in capture_ids:
        kept = [label for label in workspace.labels(capture_id) if not label.excluded]
        labels.append({"bboxes": np.array([label.box for label in kept], np.float32).reshape(-1, 4),
                       "labels": np.array([label.class_id for label in kept], np.int64)})
        rows = [row for modality in (workspace.stage_result(capture_id, AUTOLABEL_STAGE) or {}).get("per_modality", {}).values()
                for row in modality]
        per_class = [np.zeros((0, 5), np.float32) for _ in range(n_classes)]
        for row in rows:
            per_class[int(row[5])] = np.vstack([per_class[int(row[5])], np.array(row[:5], np.float32)])
        predictions.append(np.array(per_class, dtype=object))
    if not capture_ids:
        return np.zeros(0)
    return get_label_quality_scores(labels, predictions, verbose=False)
