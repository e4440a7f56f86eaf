"""Detection scores: mAP with pycocotools' COCOeval (the standard evaluator), and AP and recall by
object size under a named matching rule.

COCOeval matches by IoU only and sizes objects by area. Tiny objects need more: a 3 px person whose
box is off by one pixel has an IoU near 0.3 and is still found, so :func:`scores_by_size` also takes
a rule that accepts a centre within a few pixels, and sizes objects by their truth box's longer side
(an M30T sees a person as ~3 thermal pixels from 120 m). Its matching and 101-point precision follow
COCOeval's (greedy by descending score, same class, each truth used once; AP the mean over the
classes that have truth), and give COCOeval's AP@0.5 under the IoU >= 0.5 rule.
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ums.detections import Detections, box_iou


def coco_map(predictions: dict[str, Detections], ground_truth: dict[str, Detections],
             class_names: dict[int, str]) -> dict[str, float]:
    """AP@0.5, AP@[.5:.95] and AR@100 of ``predictions`` against ``ground_truth`` (keyed by image)."""
    images = sorted(ground_truth)
    image_ids = {name: index + 1 for index, name in enumerate(images)}
    categories = [{"id": cid + 1, "name": name} for cid, name in sorted(class_names.items())]
    annotations = []
    for name in images:
        for box, cls in zip(ground_truth[name].boxes, ground_truth[name].classes):
            x0, y0, x1, y1 = (float(v) for v in box)
            annotations.append({"id": len(annotations) + 1, "image_id": image_ids[name], "category_id": int(cls) + 1,
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
    results = [
        {"image_id": image_ids[name], "category_id": int(cls) + 1, "score": float(score),
         "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]}
        for name, detections in predictions.items() if name in image_ids
        for b, score, cls in zip(detections.boxes, detections.scores, detections.classes)
    ]
    if not annotations or not results:
        return {"AP50": 0.0, "AP": 0.0, "AR100": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints its progress
        truth = COCO()
        truth.dataset = {"images": [{"id": i} for i in image_ids.values()], "annotations": annotations,
                         "categories": categories}
        truth.createIndex()
        evaluation = COCOeval(truth, truth.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    stats = np.asarray(evaluation.stats)
    return {"AP50": float(stats[1]), "AP": float(stats[0]), "AR100": float(stats[8])}


@dataclass(frozen=True)
class MatchRule:
    """A prediction matches a truth box of its class when their IoU reaches ``iou`` or, with
    ``centre_px``, when their centres are at most that many pixels apart."""

    name: str
    iou: float
    centre_px: float | None = None


IOU_50 = MatchRule("IoU>=0.5", 0.5)
IOU_30_OR_CENTRE_2 = MatchRule("IoU>=0.3|centre<=2px", 0.3, 2.0)
# the truth box's longer side, in pixels: [low, high)
SIZE_BINS: dict[str, tuple[float, float]] = {"<8px": (0.0, 8.0), "8-32px": (8.0, 32.0), ">=32px": (32.0, math.inf)}


@dataclass(frozen=True)
class SizeScore:
    ap: float | None  # None: no truth of this size
    recall: float | None
    found: int
    truth: int


def longer_side(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])


def match_image(predictions: Detections, truth: Detections, rule: MatchRule) -> np.ndarray:
    """The truth index each prediction matched (-1: none), greedily by descending score.

    Among a prediction's candidates (same class, unused, accepted by ``rule``) the highest IoU wins,
    then the nearest centre: a loose rule must not let a box steal a neighbour's exact match."""
    matched = np.full(len(predictions), -1, np.int64)
    if not len(predictions) or not len(truth):
        return matched
    iou = box_iou(predictions.boxes.astype(np.float64), truth.boxes.astype(np.float64))
    centres = lambda d: (d.boxes[:, :2] + d.boxes[:, 2:]) / 2.0  # noqa: E731
    distance = np.linalg.norm(centres(predictions)[:, None, :] - centres(truth)[None, :, :], axis=2)
    accepted = iou >= rule.iou
    if rule.centre_px is not None:
        accepted |= distance <= rule.centre_px
    accepted &= predictions.classes[:, None] == truth.classes[None, :]
    used = np.zeros(len(truth), bool)
    for index in np.argsort(-predictions.scores, kind="stable"):
        candidates = np.flatnonzero(accepted[index] & ~used)
        if len(candidates):
            best = candidates[np.lexsort((distance[index, candidates], -iou[index, candidates]))[0]]
            matched[index], used[best] = best, True
    return matched


def scores_by_size(predictions: dict[str, Detections], ground_truth: dict[str, Detections], rule: MatchRule,
                   bins: dict[str, tuple[float, float]] = SIZE_BINS) -> dict[str, SizeScore]:
    """AP and recall of ``predictions`` against ``ground_truth`` (keyed by image), overall (``all``)
    and per size bin of the truth's longer side.

    Within a bin, as COCOeval does for its area ranges: a prediction matched to truth of another
    size, or unmatched and itself of another size, is neither right nor wrong there."""
    everything = {"all": (0.0, math.inf), **bins}
    rows = {name: [] for name in everything}  # per bin: (score, class, true positive) of counted predictions
    totals = {name: {} for name in everything}  # per bin: truth count per class
    for image, truth in ground_truth.items():
        found = predictions.get(image, Detections.empty(truth.taxonomy))
        matched = match_image(found, truth, rule)
        truth_size, found_size = longer_side(truth.boxes), longer_side(found.boxes)
        for name, (low, high) in everything.items():
            inside = (truth_size >= low) & (truth_size < high)
            for cls in truth.classes[inside]:
                totals[name][int(cls)] = totals[name].get(int(cls), 0) + 1
            for index, target in enumerate(matched):
                counted = inside[target] if target >= 0 else low <= found_size[index] < high
                if counted:
                    rows[name].append((float(found.scores[index]), int(found.classes[index]), bool(target >= 0)))
    return {name: _size_score(rows[name], totals[name]) for name in everything}


def _size_score(rows: list[tuple[float, int, bool]], totals: dict[int, int]) -> SizeScore:
    truth = sum(totals.values())
    found = sum(1 for _, cls, hit in rows if hit and cls in totals)
    if not truth:
        return SizeScore(None, None, 0, 0)
    per_class = [average_precision([(s, hit) for s, c, hit in rows if c == cls], count)
                 for cls, count in sorted(totals.items())]
    return SizeScore(float(np.mean(per_class)), found / truth, found, truth)


def average_precision(scored: list[tuple[float, bool]], positives: int) -> float:
    """COCO's 101-point interpolated AP of predictions given as (score, true positive)."""
    if not positives or not scored:
        return 0.0
    order = sorted(range(len(scored)), key=lambda i: -scored[i][0])  # stable, as COCOeval's mergesort
    hits = np.array([scored[i][1] for i in order], np.float64)
    true_positives, false_positives = np.cumsum(hits), np.cumsum(1.0 - hits)
    recall = true_positives / positives
    precision = true_positives / (true_positives + false_positives)
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # the best precision at this recall or more
    thresholds = np.linspace(0.0, 1.0, 101)
    at = np.searchsorted(recall, thresholds, side="left")
    return float(np.where(at < len(precision), precision[np.minimum(at, len(precision) - 1)], 0.0).mean())
