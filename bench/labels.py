"""Label quality against exact truth: AP@0.5 and recall by object size of `ums autolabel`'s labels.

    python bench/labels.py [--quick] [--json] [--flights DIR ...] [--detector FILE] [--out bench-out/labels]

Synthetic M30T flights (ums.synth) carry every object's box on the thermal grid, so the automatic
labels of the real pipeline (ingest, crop, align, autolabel; one worker, one torch thread) are scored
against the truth, not against another model:
- the detector: a small ultralytics model trained from scratch here, by day, on other synthetic
  flights (seeds never evaluated): 320 px tiles of the thermal images and of the aligned visible
  images, and tiles of the W frame's thermal field of view at the W camera's own sampling, boxes
  from the truth. Cached under the output folder by a hash of its settings; --detector replaces it;
- rows: autolabel mode (the 640 grid; native visible resolution; native + slicing always; slicing
  auto) x altitude band (30, 60, 120 m) x day/night: AP@0.5 (COCO-style 101-point), recall by the truth
  box's longer side on the thermal grid (< 8 px, 8-32 px, larger) under two matching rules (IoU >= 0.5;
  IoU >= 0.3 or centre within 2 px) and seconds per pair;
- model in the loop: a night flight (the detector learned by day): AP@0.5 on its last captures before
  and after `ums train-detector` on its first 10 % and 25 % (truth boxes stored as human labels).
Results are cached per flight, mode and detector; --fresh recomputes them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ums.synth.flight import GROUND_TRUTH_NAME, SynthFlightConfig, synth_flight  # noqa: E402
from ums.taxonomy import DATASET_TAXONOMY, load_taxonomy  # noqa: E402

CLASS_IDS = {"person": 0, "car": 2}  # labels/ums.yaml, whose names the bench detector carries
TILE = 320
DETECTOR_SETTINGS = {
    "version": 5,
    "model": "yolo11.yaml",
    "scale": [0.50, 0.125, 1024],  # depth, width, max channels: half yolo11n's width, ~1/3 of its FLOPs
    "train_seeds": [7101, 7102, 7103, 7104, 7105],
    "val_seeds": [7199],
    "captures": 8,
    "val_captures": 3,
    "altitude_m": [25.0, 130.0],
    "night": False,
    "tile": TILE,
    "visible_tiles": 6,
    "epochs": 25,
    "batch": 16,
    "nbs": 16,  # an optimizer step per batch: ultralytics' nominal 64 would leave ~200 steps in all
    "seed": 0,
    # later stages, (epochs, warm-up epochs), each from the previous stage's best weights: a new
    # learning-rate cycle, e.g. [[30, 0]]
    "more_epochs": [],
}


# -- flights -----------------------------------------------------------------------------------------
def flight(root: Path, seed: int, n: int, altitude: tuple[float, float], night: bool) -> Path:
    """A synthetic flight under ``root/flights``, made once."""
    name = f"s{seed}-n{n}-{'night' if night else 'day'}-{altitude[0]:g}-{altitude[1]:g}m"
    folder = root / "flights" / name
    if not (folder / GROUND_TRUTH_NAME).is_file():
        shutil.rmtree(folder, ignore_errors=True)
        synth_flight(folder, SynthFlightConfig(n=n, seed=seed, night=night, altitude_m=altitude,
                                               show_progress=False))
    return folder


def load_truth(flight_dir: Path) -> list[dict]:
    return json.loads((Path(flight_dir) / GROUND_TRUTH_NAME).read_text())["captures"]


def _run_stage(function, workspace, config, *args):
    """A stage in this process (one worker: the times per pair are one core's), without a progress bar."""
    from ums.core.executors import ExecutorSettings

    return function(workspace, *args, config, executor=ExecutorSettings(workers=1, show_progress=False))


def aligned_workspace(flight_dir: Path, root: Path):
    """``flight_dir`` ingested, cropped and aligned into the workspace ``root`` (kept between runs)."""
    from ums.align.stage import AlignConfig, align_workspace
    from ums.core.workspace import Workspace
    from ums.crop import CropConfig, crop_workspace
    from ums.ingest import IngestConfig, ingest_flight

    workspace = Workspace.open(root)
    _run_stage(ingest_flight, workspace, IngestConfig(), flight_dir)
    _run_stage(crop_workspace, workspace, CropConfig())
    _run_stage(align_workspace, workspace, AlignConfig())
    return workspace


def capture_truth(workspace, flight_dir: Path) -> dict[str, dict]:
    """The truth record of each workspace capture, matched by its thermal file's name."""
    by_name = {Path(record["files"]["T"]).name: record for record in load_truth(flight_dir)}
    return {capture.capture_id: by_name[Path(capture.frames["T"].path).name]
            for capture in workspace.captures() if Path(capture.frames["T"].path).name in by_name}


def truth_arrays(record: dict, key: str = "box_thermal") -> tuple[np.ndarray, np.ndarray]:
    """Truth boxes in the detectors' convention: groundtruth.json puts pixel (0, 0)'s centre at (0, 0),
    detectors and labels its top-left corner: half a pixel, which alone takes a 3 px person's IoU to 0.53."""
    boxes = np.array([o[key] for o in record["objects"]], float).reshape(-1, 4) + 0.5
    classes = np.array([CLASS_IDS[o["category"]] for o in record["objects"]], np.int64)
    return boxes, classes


# -- the bench detector ------------------------------------------------------------------------------
def settings_hash(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]


def bench_detector(root: Path, settings: dict = DETECTOR_SETTINGS, log=print) -> Path:
    """The bench's detector, trained once per settings (``root/detector-<hash>/best.pt``); each of
    ``more_epochs`` continues from the previous stage's best weights, in a folder of its own."""
    first = {key: value for key, value in settings.items() if key != "more_epochs"}
    weights, data = _first_stage(root, first, log)
    for index, (epochs, warmup) in enumerate(settings.get("more_epochs", [])):
        folder = root / f"detector-{settings_hash(dict(first, more_epochs=settings['more_epochs'][:index + 1]))}"
        if not (folder / "best.pt").is_file():
            log(f"detector: {epochs} more epochs from {weights}")
            stage = dict(first, epochs=epochs, warmup_epochs=warmup)
            shutil.copyfile(train_yolo(data, folder, stage, start=weights), folder / "best.pt")
            (folder / "settings.json").write_text(json.dumps(settings, indent=1))
        weights = folder / "best.pt"
    return weights


def _first_stage(root: Path, settings: dict, log) -> tuple[Path, Path]:
    folder = root / f"detector-{settings_hash(settings)}"
    weights, data = folder / "best.pt", folder / "data"
    if weights.is_file():
        return weights, data
    shutil.rmtree(data, ignore_errors=True)
    for split, seeds, n in (("train", settings["train_seeds"], settings["captures"]),
                            ("val", settings["val_seeds"], settings["val_captures"])):
        for seed in seeds:
            started = time.perf_counter()
            flight_dir = flight(root, seed, n, tuple(settings["altitude_m"]), settings["night"])
            workspace = aligned_workspace(flight_dir, root / "workspaces" / flight_dir.name)
            count = write_training_tiles(workspace, flight_dir, data / split, settings, seed)
            log(f"detector data: flight {seed}: {count} tiles ({time.perf_counter() - started:.0f} s)")
    shutil.copyfile(train_yolo(data, folder, settings), weights)
    (folder / "settings.json").write_text(json.dumps(settings, indent=1))
    return weights, data


def write_training_tiles(workspace, flight_dir: Path, out: Path, settings: dict, seed: int) -> int:
    """Tiles with truth boxes: thermal and aligned visible on the thermal grid, and the W frame's
    thermal field of view at the W camera's sampling (what slicing shows the detector)."""
    rng = np.random.default_rng(seed)
    tile, count = settings["tile"], 0
    for capture_id, record in capture_truth(workspace, flight_dir).items():
        align = workspace.stage_result(capture_id, "align")
        for modality in ("ir", "vis"):
            image = cv2.imread(str(workspace.root / align["files"][modality]), cv2.IMREAD_COLOR)
            boxes, classes = truth_arrays(record, "box_thermal")
            for x, y in _grid_origins(image.shape[1], image.shape[0], tile):
                count += _write_tile(out, f"{seed}-{capture_id}-{modality}-{x}-{y}", image, (x, y), tile, boxes,
                                     classes)
        wide = cv2.imread(str(flight_dir / record["files"]["W"]), cv2.IMREAD_COLOR)
        boxes, classes = truth_arrays(record, "box_wide")
        for index, (x, y) in enumerate(_wide_origins(record, boxes, tile, settings["visible_tiles"], rng)):
            count += _write_tile(out, f"{seed}-{capture_id}-wide-{index}", wide, (x, y), tile, boxes, classes)
    return count


def _grid_origins(width: int, height: int, tile: int) -> list[tuple[int, int]]:
    xs = sorted({0, max(width - tile, 0)} | set(range(0, max(width - tile, 0), tile)))
    ys = sorted({0, max(height - tile, 0)} | set(range(0, max(height - tile, 0), tile)))
    return [(x, y) for y in ys for x in xs]


def thermal_footprint(record: dict, width: int = 640, height: int = 512) -> np.ndarray:
    """The thermal frame's corners in W pixels: x0, y0, x1, y1 of their bounding box."""
    corners = np.array([[-0.5, -0.5], [width - 0.5, -0.5], [width - 0.5, height - 0.5], [-0.5, height - 0.5]])
    mapped = cv2.perspectiveTransform(corners[None], np.array(record["thermal_to_wide"], float))[0]
    return np.concatenate([mapped.min(0), mapped.max(0)])


def _wide_origins(record: dict, boxes: np.ndarray, tile: int, count: int, rng) -> list[tuple[int, int]]:
    """Half the tiles around a random object (so small ones are seen often), half anywhere in view."""
    x0, y0, x1, y1 = thermal_footprint(record)
    origins = []
    for index in range(count):
        if index % 2 == 0 and len(boxes):
            centre = boxes[rng.integers(len(boxes))].reshape(2, 2).mean(0) + rng.uniform(-tile / 3, tile / 3, 2)
        else:
            centre = rng.uniform([x0, y0], [x1, y1])
        x = int(np.clip(centre[0] - tile / 2, max(x0, 0), min(x1, 4000) - tile))
        y = int(np.clip(centre[1] - tile / 2, max(y0, 0), min(y1, 3000) - tile))
        origins.append((x, y))
    return origins


def _write_tile(out: Path, name: str, image: np.ndarray, origin: tuple[int, int], tile: int,
                boxes: np.ndarray, classes: np.ndarray) -> int:
    x, y = origin
    crop = image[y:y + tile, x:x + tile]
    h, w = crop.shape[:2]
    shifted = boxes - [x, y, x, y]
    clipped = np.clip(shifted, 0, [w, h, w, h])
    area = np.prod(np.maximum(shifted[:, 2:] - shifted[:, :2], 1e-6), axis=1)
    kept = np.prod(np.maximum(clipped[:, 2:] - clipped[:, :2], 0), axis=1) >= 0.4 * area
    lines = [f"{cls} {(b[0] + b[2]) / 2 / w:.6f} {(b[1] + b[3]) / 2 / h:.6f} {(b[2] - b[0]) / w:.6f} "
             f"{(b[3] - b[1]) / h:.6f}" for b, cls in zip(clipped[kept], classes[kept])]
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out / "images" / f"{name}.png"), crop)
    (out / "labels" / f"{name}.txt").write_text("".join(line + "\n" for line in lines))
    return 1


def model_yaml(folder: Path, settings: dict) -> Path:
    """ultralytics' model definition at the bench's own scale (a narrower yolo11n trains ~3x faster on CPU)."""
    import yaml
    from ultralytics.utils import ROOT as ULTRALYTICS

    definition = yaml.safe_load((ULTRALYTICS / "cfg" / "models" / "11" / settings["model"]).read_text())
    definition["scales"] = {"b": settings["scale"]}
    path = folder / "model.yaml"
    path.write_text(yaml.safe_dump(definition, sort_keys=False))
    return path


def train_yolo(data: Path, folder: Path, settings: dict, start: Path | None = None) -> Path:
    """Train on CPU, from scratch or from ``start``; class ids and names are labels/ums.yaml's."""
    from ums.core.offline import configure_ultralytics

    configure_ultralytics()
    from ultralytics import YOLO

    names = load_taxonomy(DATASET_TAXONOMY).names
    (data / "data.yaml").write_text(json.dumps({"path": str(data.resolve()), "train": "train/images",
                                                "val": "val/images", "names": names}))
    model = YOLO(str(start or model_yaml(folder, settings)), task="detect")
    model.train(data=str(data / "data.yaml"), epochs=settings["epochs"], imgsz=settings["tile"],
                batch=settings["batch"], nbs=settings["nbs"], device="cpu", workers=0, seed=settings["seed"],
                deterministic=True, project=str(folder.resolve()), name="train", exist_ok=True, plots=False,
                verbose=False, amp=False, pretrained=False, warmup_epochs=settings.get("warmup_epochs", 3.0))
    return folder / "train" / "weights" / "best.pt"


# -- evaluation ----------------------------------------------------------------------------------------
MODES = {  # row name -> AutolabelConfig fields
    "640 grid": {"visible_resolution": "aligned", "slice": "never"},
    "native": {"visible_resolution": "native", "slice": "never"},
    "native+slices": {"visible_resolution": "native", "slice": "always"},
    "slice auto": {"visible_resolution": "native", "slice": "auto"},
    # where auto slices: windows on the thermal image's isolated warm spots only, enlarged until a 0.5 m
    # person spans 18 detector pixels (the bench detector's best of 12-24 on flights 7401, 7901, 7402)
    "warm spots (auto)": {"visible_resolution": "native", "slice": "auto",
                          "slicing": {"windows": "warm-spots", "object_px": 18}},
}
SLICED_MODES = ("native+slices", "warm spots (auto)")
ALTITUDES = (30.0, 60.0, 120.0)


def autolabel_config(detector: Path, taxonomy: str, mode: str):
    from ums.autolabel.detectors import DetectorConfig
    from ums.autolabel.stage import AutolabelConfig

    return AutolabelConfig(detector=DetectorConfig(weights=detector, taxonomy=taxonomy), masks=False, force=True,
                           **MODES[mode])


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:10]


def label_flight(flight_dir: Path, workspace_root: Path, detector: Path, taxonomy: str, mode: str,
                 cache: Path, fresh: bool) -> dict:
    """Autolabel one flight in one mode on one core; the labels (per capture, on the thermal grid)
    and seconds per pair, cached by flight, mode, detector and every autolabel setting."""
    config = autolabel_config(detector, taxonomy, mode)
    settings = settings_hash(config.model_dump(mode="json"))
    key = f"{flight_dir.name}--{mode.replace(' ', '_').replace('+', '_')}--{file_digest(detector)}-{settings}"
    path = cache / f"{key}.json"
    if path.is_file() and not fresh:
        return json.loads(path.read_text())
    from ums.autolabel.stage import autolabel_workspace

    workspace = aligned_workspace(flight_dir, workspace_root)
    pairs = len(workspace.captures_with("align"))
    _warm_up(config)
    from ums.core.executors import single_threaded

    with single_threaded():
        started = time.perf_counter()
        report = _run_stage(autolabel_workspace, workspace, config)
        seconds = time.perf_counter() - started
    if report.failed:
        raise RuntimeError(f"autolabel failed on {report.failed} pair(s) of {flight_dir} in mode {mode}")
    result = {"flight": flight_dir.name, "mode": mode, "pairs": pairs, "seconds_per_pair": seconds / max(pairs, 1),
              **stored_labels(workspace, flight_dir)}
    cache.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))
    return result


def stored_labels(workspace, flight_dir: Path) -> dict:
    """The workspace's automatic labels per capture as [x0, y0, x1, y1, score, class], and each
    capture's sequence number in groundtruth.json."""
    records = capture_truth(workspace, flight_dir)
    labels = {capture_id: [[*label.box, label.score or 1.0, label.class_id] for label in workspace.labels(capture_id)
                           if label.source == "auto"] for capture_id in records}
    return {"labels": labels, "sequence": {capture_id: record["sequence"] for capture_id, record in records.items()}}


def _warm_up(config) -> None:
    """Load the detector before the clock starts: seconds per pair are the labelling, not the loading."""
    from ums.autolabel import stage

    loader = getattr(stage, "_models", None)
    if loader is not None:
        loader(config.detector, None)


def as_detections(rows: list[list[float]]):
    from ums.detections import Detections

    rows = np.array(rows, float).reshape(-1, 6)
    return Detections(rows[:, :4], rows[:, 4], rows[:, 5].astype(np.int64), DATASET_TAXONOMY)


def truth_detections(flight_dir: Path, sequence: dict[str, int]) -> dict:
    from ums.detections import Detections

    by_sequence = {record["sequence"]: record for record in load_truth(flight_dir)}
    truth = {}
    for capture_id, number in sequence.items():
        boxes, classes = truth_arrays(by_sequence[number])
        truth[capture_id] = Detections(boxes, np.ones(len(boxes)), classes, DATASET_TAXONOMY)
    return truth


def score(results: list[tuple[Path, dict]], captures: set[str] | None = None) -> dict:
    """AP and recall by size under both rules, pooled over ``results`` (flight, labelled) pairs."""
    from ums.detection_metrics import IOU_30_OR_CENTRE_2, IOU_50, scores_by_size

    predictions, truth = {}, {}
    for flight_dir, labelled in results:
        flight_truth = truth_detections(flight_dir, labelled["sequence"])
        for capture_id, rows in labelled["labels"].items():
            if captures is None or capture_id in captures:
                predictions[f"{flight_dir.name}/{capture_id}"] = as_detections(rows)
                truth[f"{flight_dir.name}/{capture_id}"] = flight_truth[capture_id]
    scored = {}
    for rule in (IOU_50, IOU_30_OR_CENTRE_2):
        for size, value in scores_by_size(predictions, truth, rule).items():
            scored[f"{rule.name} {size}"] = {"ap": value.ap, "recall": value.recall, "found": value.found,
                                             "truth": value.truth}
    return scored


# -- model in the loop ---------------------------------------------------------------------------------
LOOP = {"seed": 9301, "captures": 40, "night": True, "altitude_m": (40.0, 80.0), "fractions": (0.1, 0.25),
        "epochs": 40, "image_size": 640, "batch": 4}
LOOP_MODE = "640 grid"  # the grid train-detector's pairs are on


def model_in_the_loop(root: Path, detector: Path, taxonomy: str, settings: dict, fresh: bool, log=print) -> dict:
    """AP on the flight's last captures with the base detector, then after fine-tuning it (`ums
    train-detector`) on the truth of the first 10 % and 25 % of captures, stored as human labels."""
    flight_dir = flight(root, settings["seed"], settings["captures"], tuple(settings["altitude_m"]), settings["night"])
    from ums.train_detector import TrainDetectorConfig

    # train-detector's defaults are part of what the rows measure: a change of them reruns the loop
    trained_with = settings | {"train_detector": TrainDetectorConfig().model_dump(mode="json")}
    folder = root / "loop" / f"{flight_dir.name}--{file_digest(detector)}--{settings_hash(trained_with)}"
    cached = folder / "results.json"
    if cached.is_file() and not fresh:
        return json.loads(cached.read_text())
    shutil.rmtree(folder, ignore_errors=True)
    workspace = aligned_workspace(flight_dir, folder / "workspace")
    records = capture_truth(workspace, flight_dir)
    order = sorted(records, key=lambda capture_id: records[capture_id]["sequence"])
    first = {fraction: order[:max(2, round(fraction * len(order)))] for fraction in settings["fractions"]}
    evaluated = set(order) - set(max(first.values(), key=len))
    rows = [{"trained on": 0, **_loop_row(workspace, flight_dir, detector, taxonomy, evaluated)}]
    for fraction, reviewed in first.items():
        started = time.perf_counter()
        weights = fine_tune(workspace, records, reviewed, detector, settings, f"first-{round(fraction * 100)}pct")
        rows.append({"trained on": len(reviewed), "fraction": fraction, "train_s": time.perf_counter() - started,
                     **_loop_row(workspace, flight_dir, weights, DATASET_TAXONOMY, evaluated)})
        log(f"model in the loop: first {len(reviewed)} captures: AP@0.5 {rows[-1]['scores']['IoU>=0.5 all']['ap']:.3f}")
    result = {"flight": flight_dir.name, "captures": len(order), "evaluated": len(evaluated), "rows": rows}
    cached.write_text(json.dumps(result))
    return result


def _loop_row(workspace, flight_dir: Path, detector: Path, taxonomy: str, evaluated: set[str]) -> dict:
    from ums.autolabel.stage import autolabel_workspace

    _run_stage(autolabel_workspace, workspace, autolabel_config(detector, taxonomy, LOOP_MODE))
    return {"scores": score([(flight_dir, stored_labels(workspace, flight_dir))], evaluated)}


def fine_tune(workspace, records: dict, reviewed: list[str], detector: Path, settings: dict, name: str) -> Path:
    """The reviewer's work stood in for by the truth: those captures hold human labels only."""
    from ums.core.records import LabelRecord
    from ums.train_detector import TrainDetectorConfig, train_detector

    for capture_id in reviewed:
        workspace.replace_auto_labels(capture_id, [])
        if not any(label.source == "human" for label in workspace.labels(capture_id)):
            boxes, classes = truth_arrays(records[capture_id])
            for box, cls in zip(boxes, classes):
                workspace.add_label(capture_id, LabelRecord(taxonomy=DATASET_TAXONOMY, class_id=int(cls),
                                                            box=tuple(float(v) for v in box), source="human"))
    config = TrainDetectorConfig(base=str(detector.resolve()), epochs=settings["epochs"],
                                 image_size=settings["image_size"], batch=settings["batch"], device="cpu", name=name,
                                 seed=0, modalities="both")
    return train_detector(workspace, config, progress=False).weights


# -- the run -------------------------------------------------------------------------------------------
def evaluation_flights(root: Path, args) -> list[tuple[Path, str, str]]:
    """(flight, altitude band, day/night): --flights, or synthetic flights of seeds the detector never saw."""
    if args.flights:
        return [(Path(f).resolve(), _band_of(Path(f)), _light_of(Path(f))) for f in args.flights]
    altitudes = ALTITUDES[-1:] if args.quick else ALTITUDES
    lights = (False,) if args.quick else (False, True)
    captures = 2 if args.quick else args.captures
    return [(flight(root, 8000 + int(altitude) + 500 * night, captures, (altitude, altitude), night),
             f"{altitude:g} m", "night" if night else "day") for altitude in altitudes for night in lights]


def _band_of(flight_dir: Path) -> str:
    return f"{np.median([record['distance_m'] for record in load_truth(flight_dir)]):.0f} m"


def _light_of(flight_dir: Path) -> str:
    night = json.loads((flight_dir / GROUND_TRUTH_NAME).read_text()).get("config", {}).get("night", False)
    return "night" if night else "day"


def run(args) -> dict:
    root = args.out.resolve()
    root.mkdir(parents=True, exist_ok=True)
    log = (lambda text: print(text, file=sys.stderr)) if args.json else print
    if args.detector:
        detector, taxonomy = args.detector.resolve(), args.taxonomy
    else:
        settings = dict(DETECTOR_SETTINGS, epochs=1, train_seeds=DETECTOR_SETTINGS["train_seeds"][:1],
                        captures=2, val_captures=2) if args.quick else DETECTOR_SETTINGS
        detector, taxonomy = bench_detector(root, settings, log), DATASET_TAXONOMY
    rows = []
    for flight_dir, band, light in evaluation_flights(root, args):
        workspace_root = root / "workspaces" / f"{flight_dir.name}-{hashlib.sha256(str(flight_dir).encode()).hexdigest()[:6]}"
        for mode in MODES:
            labelled = label_flight(flight_dir, workspace_root, detector, taxonomy, mode, root / "results", args.fresh)
            rows.append({"mode": mode, "band": band, "light": light, "flight": str(flight_dir),
                         "pairs": labelled["pairs"], "seconds_per_pair": labelled["seconds_per_pair"],
                         "scores": score([(flight_dir, labelled)]), "labelled": labelled})
            log(f"{mode:14s} {band:>6s} {light:5s} AP@0.5 {rows[-1]['scores']['IoU>=0.5 all']['ap'] or 0:.3f} "
                f"({rows[-1]['seconds_per_pair']:.2f} s/pair)")
    loop = None
    if not args.no_loop:
        settings = dict(LOOP, captures=8, epochs=1, image_size=320) if args.quick else LOOP
        loop = model_in_the_loop(root, detector, taxonomy, settings, args.fresh, log)
    result = {"detector": str(detector), "taxonomy": taxonomy, "rows": rows, "pooled": pooled(rows), "loop": loop, "machine": machine()}
    result["targets"] = targets(result)
    for row in rows:
        row.pop("labelled")
    return result


def pooled(rows: list[dict]) -> list[dict]:
    """Per mode and altitude band, day and night together."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["mode"], row["band"]), []).append(row)
    return [{"mode": mode, "band": band, "pairs": sum(r["pairs"] for r in group),
             "seconds_per_pair": sum(r["seconds_per_pair"] * r["pairs"] for r in group) / sum(r["pairs"] for r in group),
             "scores": score([(Path(r["flight"]), r["labelled"]) for r in group])}
            for (mode, band), group in groups.items()]


def targets(result: dict) -> list[dict]:
    """The project's figures (docs: labels design): met or not, with the numbers they compare."""
    found = []
    by = {(row["mode"], row["band"]): row for row in result["pooled"]}
    bands = list(dict.fromkeys(row["band"] for row in result["pooled"]))
    far = max(bands, key=lambda band: float(band.split()[0]), default=None)
    grid = by.get(("640 grid", far))
    for mode in SLICED_MODES:
        sliced = by.get((mode, far))
        if grid and sliced:
            found.append(_small_object_target(grid, sliced, mode, far))
    for band in bands:
        auto, always, never = (by.get((mode, band)) for mode in ("slice auto", "native+slices", "native"))
        if auto and always and never:
            ap = lambda row: row["scores"]["IoU>=0.5 all"]["ap"] or 0.0  # noqa: E731
            best = max(ap(always), ap(never))
            found.append({"target": f"slice auto within 10 % of the better of always/never, AP@0.5 at {band}",
                          "measured": f"auto {ap(auto):.3f}, always {ap(always):.3f}, never {ap(never):.3f}",
                          "met": ap(auto) >= 0.9 * best})
    loop = result.get("loop")
    if loop and len(loop["rows"]) > 1:
        before, after = (row["scores"]["IoU>=0.5 all"]["ap"] or 0.0 for row in loop["rows"][:2])
        found.append({"target": "model in the loop: +10 AP@0.5 points after training on the first 10 %",
                      "measured": f"{before:.3f} -> {after:.3f} ({100 * (after - before):+.1f} points)",
                      "met": after - before >= 0.10})
    return found


def _small_object_target(grid: dict, sliced: dict, mode: str, band: str) -> dict:
    small = "IoU>=0.3|centre<=2px <8px"
    r_grid, r_sliced = grid["scores"][small]["recall"] or 0.0, sliced["scores"][small]["recall"] or 0.0
    ratio = sliced["seconds_per_pair"] / grid["seconds_per_pair"]
    return {"target": f"< 8 px at {band}, IoU>=0.3 or centre<=2px: {mode} recall >= 0.5 and >= 2x the 640 grid's, "
                      "<= 3x its time per pair",
            "measured": f"recall {r_sliced:.3f} vs {r_grid:.3f} ({r_sliced / r_grid if r_grid else float('inf'):.1f}x), "
                        f"time {ratio:.1f}x",
            "met": r_sliced >= 0.5 and r_sliced >= 2 * r_grid and ratio <= 3}


def machine() -> str:
    return f"{platform.platform()}, {os.cpu_count()} CPU(s), {platform.processor() or platform.machine()}"


# -- the table -----------------------------------------------------------------------------------------
SIZES = ("<8px", "8-32px", ">=32px")
RULES = ("IoU>=0.5", "IoU>=0.3|centre<=2px")


def _number(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def table_rows(rows: list[dict], light: bool = True) -> list[list[str]]:
    out = []
    for row in rows:
        scores = row["scores"]
        cells = [row["mode"], row["band"], *([row["light"]] if light else []), str(row["pairs"]),
                 _number(scores["IoU>=0.5 all"]["ap"]), _number(scores["IoU>=0.3|centre<=2px all"]["ap"])]
        for size in SIZES:
            cells.append(" / ".join(_number(scores[f"{rule} {size}"]["recall"]) for rule in RULES)
                         + f" (n={scores[f'IoU>=0.5 {size}']['truth']})")
        out.append(cells + [f"{row['seconds_per_pair']:.2f}"])
    return out


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    print(f"\n{title}")
    for cells in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(cells, widths)))


def report(result: dict) -> None:
    recall = [f"recall {size} (IoU.5 / loose)" for size in SIZES]
    print_table("autolabel vs truth, per flight (AP@0.5: IoU >= 0.5; loose: IoU >= 0.3 or centre within 2 px; "
                "sizes: the truth box's longer side on the thermal grid; seconds per pair on one core)",
                ["mode", "altitude", "light", "pairs", "AP@0.5", "AP loose", *recall, "s/pair"],
                table_rows(result["rows"]))
    print_table("day and night together", ["mode", "altitude", "pairs", "AP@0.5", "AP loose", *recall, "s/pair"],
                table_rows(result["pooled"], light=False))
    loop = result.get("loop")
    if loop:
        rows = [[str(row["trained on"]), _number(row["scores"]["IoU>=0.5 all"]["ap"]),
                 _number(row["scores"]["IoU>=0.3|centre<=2px all"]["ap"]),
                 _number(row["scores"]["IoU>=0.5 all"]["recall"]),
                 f"{row['train_s']:.0f}" if "train_s" in row else "-"] for row in loop["rows"]]
        print_table(f"model in the loop: {loop['flight']}, scored on its last {loop['evaluated']} of "
                    f"{loop['captures']} captures ({LOOP_MODE})",
                    ["fine-tuned on first N captures", "AP@0.5", "AP loose", "recall IoU.5", "train s"], rows)
    print("\ntargets")
    for target in result["targets"]:
        print(f"  [{'met' if target['met'] else 'NOT met'}] {target['target']}: {target['measured']}")
    print(f"\ndetector {result['detector']} (taxonomy {result['taxonomy']}); {result['machine']}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out" / "labels")
    parser.add_argument("--flights", type=Path, nargs="+", help="flights made elsewhere, each with groundtruth.json")
    parser.add_argument("--detector", type=Path, help="this detector instead of the bench's own")
    parser.add_argument("--taxonomy", default=DATASET_TAXONOMY, help="labels/<taxonomy>.yaml names --detector's classes")
    parser.add_argument("--captures", type=int, default=10, help="captures per evaluation flight")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 captures, one altitude, day")
    parser.add_argument("--no-loop", action="store_true", help="skip the model-in-the-loop rows")
    parser.add_argument("--fresh", action="store_true", help="relabel and rescore (the detector stays cached)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        report(result)
    return result


if __name__ == "__main__":
    main()
