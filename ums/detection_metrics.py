"""Detection mAP with pycocotools' COCOeval (the standard evaluator, never a home-made one)."""

from __future__ import annotations

import contextlib
import io

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ums.detections import Detections


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
