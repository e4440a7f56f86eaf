"""How fast the review queue finds label errors, on synthetic flights with planted errors.

    python bench/review_queue.py [--out bench-out/review_queue] [--n 14] [--fit] [--json]

Flights: `ums synth-flight` M30T flights with exact object truth (people and cars), through ingest,
crop and align, day and night at 55-65 m, 85-95 m and 110-125 m. Training flights (seeds 100-105,
half their captures spoiled) fit the priority model with --fit; the figures come from test flights
the fit never saw (seeds 200-205, about one capture in seven spoiled).

Labels: each capture gets automatic labels made from its truth as a two-modality detector would
report them: every object seen by the thermal modality (almost always when it is warm against its
surroundings, less often when not) and by the visible one, with their scores, merged, and the
per-modality detections kept as autolabel keeps them. Then about one capture in seven (--rate)
gets one planted error of a kind drawn evenly: a missed object (its label dropped; a modality may
still hold a weak detection of it), a false box, a wrong class, a shifted box (by 0.6-1 of its
size), or a one-modality artefact (a box only one modality reports: a shadow seen only in visible,
a hot spot seen only in thermal). Correct labels carry the same kinds of noise (one-modality
sightings of cold objects, low scores), so evidence is never a giveaway.

Figures: the share of the captures holding an error that a reviewer finds after reviewing the
first 5 %, 10 % and 20 % of all test captures in each order: the queue (`ums queue`), file order,
random order (mean of 50 shuffles) and cleanlab's object-detection label quality (labels against
the per-modality detections as predictions). Best possible: min(1, k / prevalence). Candidate
misses: the share of the unlabelled people and vehicles proposed, and false candidates per capture.
Timing: `review_order` on the stored priorities of 10,000 captures, one core.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ums import evidence as ev  # noqa: E402
from ums.align.stage import AlignConfig, align_workspace  # noqa: E402
from ums.core.executors import ExecutorSettings  # noqa: E402
from ums.crop import CropConfig, crop_workspace  # noqa: E402
from ums.detections import box_iou  # noqa: E402
from ums.ingest import IngestConfig, ingest_flight  # noqa: E402
from ums.queue import (  # noqa: E402
    DETECTED_UNLABELLED,
    LABEL_EVIDENCE,
    PriorityModel,
    QueueConfig,
    metres_per_px,
    queue_workspace,
    thermal_focal_px,
)
from ums.queue_order import review_order  # noqa: E402
from ums.core.records import LabelRecord  # noqa: E402
from ums.synth import SynthFlightConfig, synth_flight  # noqa: E402
from ums.core.workspace import Workspace  # noqa: E402

CLASS_IDS = {"person": 0, "car": 2}
CLASS_SIZE_M = {"person": (0.55, 0.45), "car": (4.5, 1.85)}
ERROR_KINDS = ("missed", "false box", "wrong class", "shifted box", "one-modality artefact")
QUIET = ExecutorSettings(show_progress=False)
CONDITIONS = [(light, band) for light in ("day", "night") for band in ((55.0, 65.0), (85.0, 95.0), (110.0, 125.0))]
TRAIN = [(f"train-{light}-{band[0]:.0f}m", seed, light == "night", band) for seed, (light, band) in enumerate(CONDITIONS, 100)]
TEST = [(f"test-{light}-{band[0]:.0f}m", seed, light == "night", band) for seed, (light, band) in enumerate(CONDITIONS, 200)]


@dataclass
class Planted:
    """What the bench knows of one capture's labels."""

    capture_id: str
    error: str | None  # the kind planted, or None
    unlabelled_objects: list[list[float]] = field(default_factory=list)  # truth boxes no label covers
    wrong_labels: int = 0


# -- flights ---------------------------------------------------------------------------------------
def prepared_flight(out: Path, name: str, seed: int, night: bool, band, n: int) -> Path:
    """A flight through ingest, crop and align, kept under ``out`` for the next run."""
    folder = out / "flights" / name
    workspace = folder / "ws"
    if (folder / "ready").exists():
        return folder
    flight = folder / "flight"
    synth_flight(flight, SynthFlightConfig(n=n, seed=seed, night=night, altitude_m=band, show_progress=False))
    with Workspace.open(workspace) as ws:
        ingest_flight(ws, flight, IngestConfig(), QUIET)
        crop_workspace(ws, CropConfig(), QUIET)
        align_workspace(ws, AlignConfig(), QUIET)
    (folder / "ready").write_text("ok")
    return folder


# -- labels ----------------------------------------------------------------------------------------
def plant_labels(folder: Path, seed: int, rate: float) -> list[Planted]:
    """Automatic labels from truth, one error planted in about ``rate`` of the captures."""
    truth = json.loads((folder / "flight" / "groundtruth.json").read_text())["captures"]
    rng = np.random.default_rng(seed)
    planted = []
    with Workspace.open(folder / "ws") as ws:
        captures = ws.captures()
        # exactly round(rate * n) captures of each flight hold an error: the prevalence the figures assume
        spoiled = {captures[i].capture_id for i in rng.permutation(len(captures))[:round(rate * len(captures))]}
        for capture, capture_truth in zip(captures, truth):
            crop = ws.stage_result(capture.capture_id, "crop")
            counts = cv2.imread(str(ws.absolute(crop["files"]["ir16"])), cv2.IMREAD_UNCHANGED)
            metres = metres_per_px(crop, thermal_focal_px("m30t"))
            scene = ev.thermal_scene(counts, metres)
            objects = [o for o in capture_truth["objects"] if o["category"] in CLASS_IDS]
            labels, detections = truthful_labels(objects, scene, rng)
            error = str(rng.choice(ERROR_KINDS)) if capture.capture_id in spoiled else None
            record = Planted(capture.capture_id, error)
            if error:
                plant(error, labels, detections, objects, scene, metres, rng, record)
            record.unlabelled_objects = unlabelled(objects, labels)
            ws.replace_auto_labels(capture.capture_id, [label_record(label) for label in labels])
            ws.record_outcome(capture.capture_id, "autolabel", "done",
                              {"model": "bench-planted", "per_modality": detections, "fingerprint": "bench"}, [])
            planted.append(record)
    return planted


def truthful_labels(objects, scene, rng) -> tuple[list[dict], dict[str, list]]:
    labels, detections = [], {"visible": [], "thermal": []}
    for obj in objects:
        box = jitter(obj["box_thermal"], rng, 0.03)
        warmth = box_warmth(scene, box)
        seen = {}
        if rng.random() < (0.97 if warmth >= ev.WARM_CONTRAST_SIGMA else 0.35):
            seen["thermal"] = float(rng.uniform(0.5, 0.95))
        if rng.random() < 0.9 or not seen:
            seen["visible"] = float(rng.uniform(0.45, 0.95))
        labels.append({"box": box, "class": obj["category"], "provenance": seen, "score": max(seen.values())})
        for modality, score in seen.items():
            detections[modality].append([*jitter(box, rng, 0.02), score, CLASS_IDS[obj["category"]]])
    return labels, detections


def plant(kind, labels, detections, objects, scene, metres, rng, record: Planted) -> None:
    if kind == "missed" and labels:
        gone = labels.pop(int(rng.integers(len(labels))))
        if rng.random() < 0.6:  # a modality still reports it, too weakly to be kept
            detections[str(rng.choice(["visible", "thermal"]))].append([*gone["box"], float(rng.uniform(0.1, 0.3)),
                                                                       CLASS_IDS[gone["class"]]])
    elif kind == "wrong class" and labels:
        label = labels[int(rng.integers(len(labels)))]
        right = label["class"]
        label["class"] = "car" if right == "person" else "person"
        wrong_modality = str(rng.choice(list(label["provenance"])))
        swap_detection_class(detections[wrong_modality], label["box"], CLASS_IDS[label["class"]])
        record.wrong_labels += 1
    elif kind == "shifted box" and labels:
        label = labels[int(rng.integers(len(labels)))]
        x0, y0, x1, y1 = label["box"]
        angle, amount = rng.uniform(0, 2 * math.pi), rng.uniform(0.6, 1.0)
        dx, dy = math.cos(angle) * amount * (x1 - x0), math.sin(angle) * amount * (y1 - y0)
        label["box"] = [x0 + dx, y0 + dy, x1 + dx, y1 + dy]
        record.wrong_labels += 1
    else:  # a false box, or one only one modality reports (also when a flight has no object to spoil)
        one_modality = kind == "one-modality artefact"
        labels.append(false_box(scene, metres, rng, one_modality, detections))
        record.error = kind if kind in ("false box", "one-modality artefact") else "false box"
        record.wrong_labels += 1


def false_box(scene, metres, rng, one_modality: bool, detections) -> dict:
    category = str(rng.choice(["person", "car"]))
    length, width = (side / metres for side in CLASS_SIZE_M[category])
    height_px, width_px = scene.contrast.shape
    x, y = rng.uniform(0, width_px - length), rng.uniform(0, height_px - length)
    box = [float(x), float(y), float(x + length), float(y + width)]
    seen = {}
    if one_modality:
        seen[str(rng.choice(["visible", "thermal"]))] = float(rng.uniform(0.4, 0.8))
    else:
        seen = {"visible": float(rng.uniform(0.35, 0.75)), "thermal": float(rng.uniform(0.35, 0.75))}
    for modality, score in seen.items():
        detections[modality].append([*box, score, CLASS_IDS[category]])
    return {"box": box, "class": category, "provenance": seen, "score": max(seen.values())}


def swap_detection_class(rows, box, class_id) -> None:
    if not rows:
        return
    iou = box_iou(np.array([box]), np.array(rows)[:, :4])[0]
    rows[int(np.argmax(iou))][5] = class_id


def unlabelled(objects, labels) -> list[list[float]]:
    boxes = np.array([label["box"] for label in labels]).reshape(-1, 4)
    return [o["box_thermal"] for o in objects if not len(boxes) or box_iou(np.array([o["box_thermal"]]), boxes)[0].max() < 0.3]


def label_record(label: dict) -> LabelRecord:
    return LabelRecord(class_id=CLASS_IDS[label["class"]], box=tuple(label["box"]), score=round(label["score"], 4),
                       provenance={k: round(v, 4) for k, v in label["provenance"].items()}, model="bench-planted")


def jitter(box, rng, share: float) -> list[float]:
    x0, y0, x1, y1 = box
    sx, sy = share * (x1 - x0), share * (y1 - y0)
    return [float(x0 + rng.normal(0, sx)), float(y0 + rng.normal(0, sy)), float(x1 + rng.normal(0, sx)),
            float(y1 + rng.normal(0, sy))]


def box_warmth(scene, box) -> float:
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    h, w = scene.contrast.shape
    window = scene.contrast[max(y0, 0):min(max(y1, y0 + 1), h), max(x0, 0):min(max(x1, x0 + 1), w)]
    return float(window.max()) if window.size else 0.0


# -- measuring -------------------------------------------------------------------------------------
def found_shares(order: list[str], erroneous: set[str], total: int, fractions=(0.05, 0.10, 0.20)) -> list[float]:
    return [len(set(order[:max(1, round(f * total))]) & erroneous) / max(len(erroneous), 1) for f in fractions]


def evaluate(folders: list[Path], planted: dict[str, list[Planted]], priority: PriorityModel) -> dict:
    entries, cleanlab, file_order = [], [], []
    misses = {"objects": 0, "proposed": 0, "false": 0, "captures": 0}
    for folder in folders:
        with Workspace.open(folder / "ws") as ws:
            queue_workspace(ws, QueueConfig(priority=priority), QUIET)
            for entry in review_order(ws):
                entries.append((entry.priority, f"{folder.name}/{entry.capture_id}"))
            for entry in review_order(ws, rank="cleanlab"):
                cleanlab.append((entry.priority, f"{folder.name}/{entry.capture_id}"))
            file_order += [f"{folder.name}/{c.capture_id}" for c in ws.captures()]
            count_candidates(ws, planted[folder.name], misses)
    erroneous = {f"{folder.name}/{p.capture_id}" for folder in folders for p in planted[folder.name] if p.error}
    total = len(file_order)
    rng = np.random.default_rng(0)
    random_shares = np.mean([found_shares(list(rng.permutation(file_order)), erroneous, total) for _ in range(50)], axis=0)
    prevalence = len(erroneous) / total
    queue_order = [key for _, key in sorted(entries, key=lambda e: -e[0])]
    top = set(queue_order[:round(0.2 * total)])
    kinds = {f"{folder.name}/{p.capture_id}": p.error for folder in folders for p in planted[folder.name] if p.error}
    by_kind = {kind: [sum(1 for key, k in kinds.items() if k == kind and key in top), sum(1 for k in kinds.values() if k == kind)]
               for kind in ERROR_KINDS}
    return {
        "queue found @20% by kind": by_kind,
        "captures": total, "erroneous": len(erroneous), "prevalence": round(prevalence, 3),
        "orders": {
            "queue": found_shares(queue_order, erroneous, total),
            "file order": found_shares(file_order, erroneous, total),
            "random": [float(v) for v in random_shares],
            "cleanlab": found_shares([key for _, key in sorted(cleanlab, key=lambda e: -e[0])], erroneous, total),
            "best possible": [min(1.0, f / prevalence) for f in (0.05, 0.10, 0.20)],
        },
        "candidates": {"unlabelled objects": misses["objects"], "proposed": misses["proposed"],
                       "recall": round(misses["proposed"] / max(misses["objects"], 1), 3),
                       "false per capture": round(misses["false"] / max(misses["captures"], 1), 3)},
    }


def count_candidates(ws: Workspace, planted: list[Planted], misses: dict) -> None:
    for record in planted:
        stored = ws.stage_result(record.capture_id, "queue")
        warm = np.array([c["box"] for c in stored["candidates"] if c["reason"] == ev.WARM_UNLABELLED]).reshape(-1, 4)
        truth = np.array(record.unlabelled_objects).reshape(-1, 4)
        misses["captures"] += 1
        misses["objects"] += len(truth)
        if len(truth) and len(warm):
            overlap = box_iou(truth, warm) > 0.1
            misses["proposed"] += int(overlap.any(axis=1).sum())
            misses["false"] += int((~overlap.any(axis=0)).sum())
        else:
            misses["false"] += len(warm)


def candidate_recall(folders: list[Path]) -> dict[str, dict]:
    """Warm candidates on captures with no label at all: the share of the truth's people and
    vehicles proposed (a candidate box overlapping theirs), and false candidates per capture, per
    flight (day and night, each altitude band)."""
    figures = {}
    for folder in folders:
        truth = json.loads((folder / "flight" / "groundtruth.json").read_text())["captures"]
        found = {"person": [0, 0], "car": [0, 0]}
        false = 0
        with Workspace.open(folder / "ws") as ws:
            for capture, capture_truth in zip(ws.captures(), truth):
                crop, align = ws.stage_result(capture.capture_id, "crop"), ws.stage_result(capture.capture_id, "align")
                counts = cv2.imread(str(ws.absolute(crop["files"]["ir16"])), cv2.IMREAD_UNCHANGED)
                visible = cv2.imread(str(ws.absolute(align["files"]["vis"])))
                valid = ev.valid_area(visible)
                scene = ev.thermal_scene(counts, metres_per_px(crop, thermal_focal_px("m30t")), valid)
                boxes = np.array([c.box for c in ev.warm_candidates(scene, [], valid)]).reshape(-1, 4)
                objects = [o for o in capture_truth["objects"] if o["category"] in found]
                truth_boxes_ = np.array([o["box_thermal"] for o in objects]).reshape(-1, 4)
                overlap = box_iou(truth_boxes_, boxes) > 0.1 if len(boxes) and len(objects) else np.zeros((len(objects), len(boxes)), bool)
                for obj, hit in zip(objects, overlap.any(axis=1) if len(boxes) else [False] * len(objects)):
                    found[obj["category"]][0] += int(hit)
                    found[obj["category"]][1] += 1
                false += int((~overlap.any(axis=0)).sum()) if len(objects) else len(boxes)
        n = len(truth)
        figures[folder.name] = {"person": found["person"], "car": found["car"],
                                "recall": round(sum(v[0] for v in found.values()) / max(sum(v[1] for v in found.values()), 1), 3),
                                "false per capture": round(false / max(n, 1), 2)}
    return figures


# -- fitting the priority model --------------------------------------------------------------------
def fit(folders: list[Path], planted: dict[str, list[Planted]], prior_shift: float = 0.0) -> PriorityModel:
    """Logistic fits (Newton's method, a little L2): label evidence against planted wrong labels,
    candidate contrast and detection score against unlabelled truth objects. The training flights
    hold errors more often than the flights ranked later, for enough examples of each kind:
    ``prior_shift`` moves the biases to the rate ranked (the prior correction of a logistic fit)."""
    base = PriorityModel()
    label_rows, label_y, candidate_rows, candidate_y, detection_rows, detection_y = [], [], [], [], [], []
    for folder in folders:
        with Workspace.open(folder / "ws") as ws:
            queue_workspace(ws, QueueConfig(priority=base), QUIET)
            for record in planted[folder.name]:
                stored = ws.stage_result(record.capture_id, "queue")
                labels = {str(label.id): label for label in ws.labels(record.capture_id)}
                truth = truth_boxes(folder, ws, record.capture_id)
                for label_id, item in stored["labels"].items():
                    label = labels[label_id]
                    label_rows.append([1.0, *(float(name in item["evidence"]) for name in LABEL_EVIDENCE),
                                       1.0 - (label.score or 1.0)])
                    label_y.append(float(not matches_truth(label, truth)))
                missed = np.array(record.unlabelled_objects).reshape(-1, 4)
                for candidate in stored["candidates"]:
                    hit = float(len(missed) > 0 and box_iou(np.array([candidate["box"]]), missed)[0].max() > 0.1)
                    if candidate["reason"] == DETECTED_UNLABELLED:
                        detection_rows.append([1.0, candidate["score"]])
                        detection_y.append(hit)
                    else:
                        candidate_rows.append([1.0, min(candidate["contrast"], 20.0)])
                        candidate_y.append(hit)
    fitted = {}
    label_w = logistic(np.array(label_rows), np.array(label_y))
    if label_w:
        seen = np.array(label_rows)[np.array(label_y, bool), 1:-1].sum(axis=0)
        # evidence no wrong training label carried keeps its prior weight: the fit cannot tell its
        # effect (the flights have no masks, dark frames or weak detectors, and no planted error
        # sits on the border); evidence never makes a label more likely right
        weights = {name: round(max(w, 0.0), 3) if count else base.label_weights.get(name, 0.0)
                   for name, w, count in zip(LABEL_EVIDENCE, label_w[1:-1], seen)}
        fitted.update(label_bias=round(label_w[0] + prior_shift, 3), label_score_weight=round(max(label_w[-1], 0.0), 3),
                      label_weights=weights)
    candidate_w = logistic(np.array(candidate_rows).reshape(-1, 2), np.array(candidate_y))
    if candidate_w:
        fitted.update(candidate_bias=round(candidate_w[0] + prior_shift, 3), candidate_contrast_weight=round(candidate_w[1], 3))
    detection_w = logistic(np.array(detection_rows).reshape(-1, 2), np.array(detection_y))
    if detection_w:
        fitted.update(detection_bias=round(detection_w[0] + prior_shift, 3), detection_score_weight=round(detection_w[1], 3))
    print(f"fitted on {len(label_y)} labels ({int(sum(label_y))} wrong), {len(candidate_y)} warm candidates "
          f"({int(sum(candidate_y))} misses), {len(detection_y)} unlabelled detections ({int(sum(detection_y))} misses)")
    rows, wrong = np.array(label_rows), np.array(label_y, bool)
    print("evidence on wrong / right labels: " + ", ".join(
        f"{name} {int(rows[wrong, i + 1].sum())}/{int(rows[~wrong, i + 1].sum())}" for i, name in enumerate(LABEL_EVIDENCE)))
    return base.model_copy(update=fitted)


def truth_boxes(folder: Path, ws: Workspace, capture_id: str) -> list[tuple[list[float], int]]:
    truth = json.loads((folder / "flight" / "groundtruth.json").read_text())["captures"]
    index = [c.capture_id for c in ws.captures()].index(capture_id)
    return [(o["box_thermal"], CLASS_IDS[o["category"]]) for o in truth[index]["objects"] if o["category"] in CLASS_IDS]


def matches_truth(label: LabelRecord, truth) -> bool:
    return any(cls == label.class_id and box_iou(np.array([label.box]), np.array([box]))[0, 0] >= 0.5 for box, cls in truth)


def logistic(x: np.ndarray, y: np.ndarray, l2: float = 0.1, steps: int = 50) -> list[float] | None:
    """Weights of a logistic fit, the first column the bias; None when ``y`` has one value only."""
    if len(y) == 0 or y.min() == y.max():
        return None
    w = np.zeros(x.shape[1])
    penalty = l2 * np.eye(x.shape[1])
    penalty[0, 0] = 0.0  # the bias is not shrunk
    for _ in range(steps):
        p = 1 / (1 + np.exp(-x @ w))
        gradient = x.T @ (p - y) + penalty @ w
        hessian = (x * (p * (1 - p))[:, None]).T @ x + penalty
        w -= np.linalg.solve(hessian, gradient)
    return [float(v) for v in w]


# -- timing ----------------------------------------------------------------------------------------
def logit(p: float) -> float:
    return math.log(p / (1 - p))


def queue_timing(out: Path, n: int = 10_000) -> float:
    """Seconds for `review_order` over ``n`` weighed captures (the stored results, one core)."""
    from ums.core.records import CaptureRecord

    root = out / "timing-ws"
    if not (root / "ready").exists():
        with Workspace.open(root) as ws:
            captures = [CaptureRecord(capture_id=f"c{i:05d}", flight_root="/f", folder="", sequence=i, timestamp=None,
                                      frames={}) for i in range(n)]
            ws.replace_flight("/f", captures, [], scope="/f")
            rng = np.random.default_rng(0)
            with ws.transaction() as db:
                db.executemany("INSERT INTO stage_results (capture_id, stage, status, result_json, updated_at) VALUES "
                               "(?, 'queue', 'done', ?, '')",
                               [(c.capture_id, json.dumps({"priority": float(rng.random()), "reasons": ["one modality"] * 3,
                                                           "labels": {str(j): {"evidence": [], "p_error": 0.1}
                                                                      for j in range(8)}}))
                                for c in captures])
        (root / "ready").write_text("ok")
    with Workspace.open(root) as ws:
        start = time.perf_counter()
        order = review_order(ws, limit=50)
        seconds = time.perf_counter() - start
    assert len(order) == 50
    return seconds


# -- the table -------------------------------------------------------------------------------------
def print_table(result: dict, timing: float) -> None:
    print(f"\nReview queue on planted-error flights the fit never saw ({result['captures']} captures, "
          f"{result['erroneous']} with an error, prevalence {result['prevalence']:.3f}); machine: "
          f"{platform.processor() or platform.machine()}, {platform.python_version()}")
    print(f"{'order':<16}{'found @5%':>11}{'@10%':>8}{'@20%':>8}{'x random @20%':>15}")
    random20 = result["orders"]["random"][2]
    for name, shares in result["orders"].items():
        print(f"{name:<16}{shares[0]:>11.2f}{shares[1]:>8.2f}{shares[2]:>8.2f}{shares[2] / max(random20, 1e-9):>15.2f}")
    c = result["candidates"]
    print(f"candidate misses: {c['proposed']}/{c['unlabelled objects']} unlabelled people and vehicles proposed "
          f"(recall {c['recall']:.2f}), {c['false per capture']:.2f} false candidates per capture")
    print("queue, found in the first 20 % by kind: " + ", ".join(f"{kind} {found}/{of}" for kind, (found, of)
                                                                 in result["queue found @20% by kind"].items()))
    print("warm candidates on captures with no label at all (people found, vehicles found, recall, false per capture):")
    for name, figures in result["candidates with no label at all"].items():
        print(f"  {name:<18} people {figures['person'][0]}/{figures['person'][1]}, vehicles {figures['car'][0]}/"
              f"{figures['car'][1]}, recall {figures['recall']:.2f}, {figures['false per capture']:.2f} false per capture")
    print(f"review_order on 10,000 weighed captures: {timing:.2f} s")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out" / "review_queue")
    parser.add_argument("--n", type=int, default=21, help="captures per flight")
    parser.add_argument("--rate", type=float, default=1 / 7, help="share of captures given a planted error")
    parser.add_argument("--fit", action="store_true", help="fit the priority model on the training flights first")
    parser.add_argument("--fit-rate", type=float, default=0.5, help="share of training captures given an error")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    train = [prepared_flight(args.out, name, seed, night, band, args.n) for name, seed, night, band in TRAIN]
    test = [prepared_flight(args.out, name, seed, night, band, args.n) for name, seed, night, band in TEST]
    seeds = {name: seed for name, seed, _, _ in TRAIN + TEST}
    planted = {folder.name: plant_labels(folder, seeds[folder.name], args.fit_rate) for folder in train}
    planted |= {folder.name: plant_labels(folder, seeds[folder.name], args.rate) for folder in test}
    priority = PriorityModel()
    if args.fit:
        priority = fit(train, planted, logit(args.rate) - logit(args.fit_rate))
        (args.out / "priority.json").write_text(priority.model_dump_json(indent=2))
        print("fitted priority model (ums/queue.py PriorityModel defaults):\n" + priority.model_dump_json(indent=2))
    result = evaluate(test, planted, priority)
    result["kinds"] = {kind: sum(1 for records in planted.values() for p in records if p.error == kind) for kind in ERROR_KINDS}
    result["candidates with no label at all"] = candidate_recall(test)
    timing = queue_timing(args.out)
    result["queue_seconds_10k"] = round(timing, 3)
    print(json.dumps(result, indent=2) if args.json else "", end="")
    print_table(result, timing)
    return result


if __name__ == "__main__":
    main()
