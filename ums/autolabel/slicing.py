"""Sliced detection (SAHI) for any detector of the project, and when and where slicing pays.

A detector sees its input shrunk to ``image_size`` pixels: a person of 12 native pixels in a
2,600 px wide view becomes 3 pixels, below what a COCO detector resolves. Slicing runs the
detector on windows of the image at its own sampling (or enlarged, ``object_px``) and merges the
windows' boxes with SAHI's postprocess; a full-image pass keeps what only the whole view shows.
``auto`` slices when the smallest object of interest (``min_object_m``, a person seen from above)
would fall under ``min_object_px`` in a full-image pass (docs/architecture.md keeps defaults here,
in the config).

Where: ``windows: grid`` covers the image with SAHI's overlapping slices; ``windows: warm-spots``
puts a window only on each isolated warm spot of the thermal image, which a person at 120 m still
is (~3 thermal pixels, several kelvin above the ground around) where the visible detector would
need ~20 grid slices to find them: the rest of the view gets the full-image pass only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ums.detections import Detections

SliceMode = Literal["auto", "always", "never"]


class SlicingConfig(BaseModel):
    """How sliced detection cuts and merges, and what ``slice: auto`` weighs."""

    model_config = ConfigDict(extra="forbid")

    size: int = Field(640, ge=32, description="grid slice side in pixels of the image the detector is given (its "
                      "input size for slices, whatever detector.image_size says)")
    overlap: float = Field(0.2, ge=0, lt=1, description="share of a grid slice its neighbour repeats")
    windows: Literal["grid", "warm-spots"] = Field(
        "grid", description="grid: overlapping slices over the whole image; warm-spots: a window on each small warm "
        "spot of the thermal image only (the grid where they would cost more)")
    object_px: float | None = Field(
        None, gt=0, description="enlarge slices until the smallest object of interest spans this many detector "
        "pixels (at most max_zoom times; needs the range; grid slices then cover zoom^2 times as many): None: "
        "slices at the image's own sampling")
    window_size: int = Field(320, ge=32, description="warm-spot window side in detector input pixels (an export of a "
                             "fixed input size letterboxes it to that)")
    max_zoom: float = Field(4.0, ge=1, le=8)
    warm_spot_contrast: float = Field(10.0, gt=0, description="grey levels (8-bit thermal image) a warm spot stands "
                                      "above the warmest pixel around it at least")
    warm_spot_noise: float = Field(6.0, ge=0, description="... and at least this many times the image's pixel noise")
    postprocess: Literal["GREEDYNMM", "NMM", "NMS"] = Field(
        "GREEDYNMM", description="how boxes of overlapping slices merge (SAHI's postprocess_type)")
    match_metric: Literal["IOS", "IOU"] = Field("IOS", description="SAHI's postprocess_match_metric: IOS matches "
                                                "an object cut at a slice border with its whole box")
    match_threshold: float = Field(0.5, gt=0, le=1)
    full_image_pass: bool = Field(True, description="also detect on the whole image (large objects)")
    min_object_m: float = Field(0.5, gt=0, description="smallest object of interest: a person seen from above")
    min_object_px: float = Field(8.0, gt=0, description="smallest size (detector input pixels) the detector "
                                 "resolves")


@dataclass(frozen=True)
class SliceDecision:
    """Whether one image is sliced, and what the decision weighed."""

    sliced: bool
    slices: int  # detector passes over slices (0: one full-image pass only)
    gsd_m: float | None  # metres per pixel of the image given (None: range unknown)
    object_px: float | None  # the smallest object of interest, in detector-input pixels of a full-image pass
    zoom: float = 1.0  # how much each slice is enlarged for the detector
    windows: str = "grid"  # where the slices are: grid or warm-spots

    @property
    def mode(self) -> str:
        return "sliced" if self.sliced else "full"


def ground_sample_distance(range_m: float | None, focal_px: float) -> float | None:
    """Metres per pixel of a camera with focal length ``focal_px`` at ``range_m`` (None: unknown)."""
    if range_m is None or not math.isfinite(range_m) or range_m <= 0 or focal_px <= 0:
        return None
    return range_m / focal_px


def full_pass_object_px(gsd_m: float | None, size: tuple[int, int], input_px: int, config: SlicingConfig) -> float | None:
    """The smallest object's size once a full-image pass fits ``size`` (w, h) into ``input_px``."""
    if gsd_m is None:
        return None
    return config.min_object_m / gsd_m * input_px / max(size)


def slice_zoom(gsd_m: float | None, config: SlicingConfig) -> float:
    """How much to enlarge slices so the smallest object spans ``object_px`` detector pixels (1: as they are)."""
    if config.object_px is None or gsd_m is None:
        return 1.0
    return round(min(max(config.object_px * gsd_m / config.min_object_m, 1.0), config.max_zoom), 2)


def decide(mode: SliceMode, size: tuple[int, int], gsd_m: float | None, input_px: int,
           config: SlicingConfig) -> SliceDecision:
    """Slice with ``always``; with ``auto`` when the image is larger than one slice and the smallest
    object would be under ``min_object_px`` in a full pass. An unknown range never slices: nothing
    says the objects are small, and slicing multiplies the detector's cost."""
    object_px = full_pass_object_px(gsd_m, size, input_px, config)
    larger_than_a_slice = max(size) > config.size
    small = object_px is not None and object_px < config.min_object_px
    sliced = mode == "always" or (mode == "auto" and larger_than_a_slice and small)
    if not sliced:
        return SliceDecision(False, 0, gsd_m, object_px)
    zoom = slice_zoom(gsd_m, config)
    return SliceDecision(True, slice_count(size, config, zoom), gsd_m, object_px, zoom)


def slice_windows(size: tuple[int, int], config: SlicingConfig, zoom: float = 1.0) -> list[list[int]]:
    """SAHI's grid windows (x0, y0, x1, y1) over an image of ``size`` (w, h); enlarged ``zoom``
    times, each still gives the detector ``config.size`` pixels."""
    from sahi.slicing import get_slice_bboxes

    width, height = size
    side = max(round(config.size / zoom), 1)
    return get_slice_bboxes(height, width, slice_height=side, slice_width=side,
                            overlap_height_ratio=config.overlap, overlap_width_ratio=config.overlap)


def slice_count(size: tuple[int, int], config: SlicingConfig, zoom: float = 1.0) -> int:
    return len(slice_windows(size, config, zoom))


# -- warm spots ----------------------------------------------------------------------------------------
def warm_spots(thermal: np.ndarray, object_px: float | None, config: SlicingConfig) -> np.ndarray:
    """Centres (x, y) of the isolated warm spots of an 8-bit thermal image, in pixel-edge coordinates
    (pixel (0, 0) spans 0..1, as boxes do): pixels warmer, by ``warm_spot_contrast`` grey levels and
    ``warm_spot_noise`` times the pixel noise, than every pixel of a ring one to two object sizes
    around them. People and animals are such spots; roofs, roads and sunlit ground are not (their
    ring holds pixels as warm), nor is a car beside its warm engine, which the full-image pass finds
    anyway. ``object_px``: the smallest object's size in thermal pixels (None: 3)."""
    grey = thermal if thermal.ndim == 2 else cv2.cvtColor(thermal, cv2.COLOR_BGR2GRAY)
    surroundings = cv2.dilate(grey, _ring(object_px or 3.0))
    threshold = max(config.warm_spot_contrast, config.warm_spot_noise * pixel_noise(grey))
    warmer = grey.astype(np.int16) - surroundings.astype(np.int16) >= threshold
    count, _, _, centres = cv2.connectedComponentsWithStats(warmer.astype(np.uint8), connectivity=8)
    return centres[1:count].astype(np.float64).reshape(-1, 2) + 0.5


def _ring(object_px: float) -> np.ndarray:
    """A ring kernel from one object size (at least 2 px) out to twice that."""
    inner = max(2, round(object_px))
    outer = inner + max(2, round(object_px))
    ys, xs = np.mgrid[-outer:outer + 1, -outer:outer + 1]
    distance = np.hypot(xs, ys)
    return ((distance >= inner) & (distance <= outer)).astype(np.uint8)


def pixel_noise(grey: np.ndarray) -> float:
    """The image's pixel-to-pixel noise: the robust spread of what a 5 px median removes."""
    residual = grey.astype(np.float32) - cv2.medianBlur(grey, 5).astype(np.float32)
    return float(1.4826 * np.median(np.abs(residual - np.median(residual))))


def spot_windows(points: np.ndarray, size: tuple[int, int], side: int) -> list[list[int]]:
    """Windows of ``side`` px inside an image of ``size`` (w, h) covering every point in it: in
    reading order, a point gets a window centred on it (shifted inside the image) unless an earlier
    window holds it a quarter side or more from each of its borders that is not the image's own (an
    object there is whole in that window)."""
    width, height = size
    margin = side / 4
    inside = [(x, y) for x, y in np.round(np.asarray(points, np.float64).reshape(-1, 2), 2).tolist()
              if 0 <= x <= width and 0 <= y <= height]
    windows: list[list[int]] = []
    for x, y in sorted(inside, key=lambda point: (point[1], point[0])):
        if any(_well_inside(x, y, window, margin, size) for window in windows):
            continue
        x0 = int(np.clip(round(x - side / 2), 0, max(width - side, 0)))
        y0 = int(np.clip(round(y - side / 2), 0, max(height - side, 0)))
        windows.append([x0, y0, min(x0 + side, width), min(y0 + side, height)])
    return windows


def _well_inside(x: float, y: float, window: list[int], margin: float, size: tuple[int, int]) -> bool:
    x0, y0, x1, y1 = window
    width, height = size
    return ((x0 == 0 or x >= x0 + margin) and (x1 == width or x <= x1 - margin)
            and (y0 == 0 or y >= y0 + margin) and (y1 == height or y <= y1 - margin)
            and x0 <= x <= x1 and y0 <= y <= y1)


def cheaper_windows(spots: np.ndarray, size: tuple[int, int], decision: SliceDecision,
                    config: SlicingConfig) -> list[list[int]] | None:
    """Windows on the warm ``spots`` (this image's pixels) where they give the detector fewer pixels
    than the grid's ``decision.slices``; None: the grid (a scene full of warm spots)."""
    windows = spot_windows(spots, size, max(round(config.window_size / decision.zoom), 1))
    return windows if len(windows) * config.window_size ** 2 < decision.slices * config.size ** 2 else None


# -- detection -----------------------------------------------------------------------------------------
def sliced_detect(detector, image: np.ndarray, config: SlicingConfig, windows: list[list[int]] | None = None,
                  zoom: float = 1.0) -> Detections:
    """Detections of ``detector`` on ``windows`` of ``image`` (None: the grid), each enlarged ``zoom``
    times to the slice or window size, and on the whole image (``full_image_pass``, or where there is
    no window), merged by SAHI's postprocess, in the image's pixels and the detector's taxonomy."""
    height, width = image.shape[:2]
    input_px = config.size if windows is None else config.window_size
    windows = slice_windows((width, height), config, zoom) if windows is None else windows
    found = [_window_detections(detector, image, window, zoom, input_px) for window in windows]
    whole = [0, 0, width, height]
    if not windows or (config.full_image_pass and not (len(windows) == 1 and windows[0] == whole and zoom == 1)):
        found.append(detector.detect(image))
    predictions = [prediction for detections in found for prediction in _predictions(detections, (height, width))]
    return _to_detections(_merge(predictions, config), detector.taxonomy)


def _window_detections(detector, image: np.ndarray, window: list[int], zoom: float, input_px: int) -> Detections:
    """One window's detections at ``input_px`` detector pixels, in the whole image's pixels."""
    x0, y0, x1, y1 = window
    crop = image[y0:y1, x0:x1]
    if zoom != 1.0:
        crop = cv2.resize(crop, (round((x1 - x0) * zoom), round((y1 - y0) * zoom)), interpolation=cv2.INTER_LINEAR)
    found = detector.detect(np.ascontiguousarray(crop), image_size=input_px)
    scale = np.array([crop.shape[1] / (x1 - x0), crop.shape[0] / (y1 - y0)] * 2)
    return Detections(found.boxes / scale + [x0, y0, x0, y0], found.scores, found.classes, found.taxonomy)


def _predictions(detections: Detections, full_shape: tuple[int, int]) -> list:
    from sahi.prediction import ObjectPrediction

    height, width = full_shape
    predictions = []
    for box, score, cls in zip(detections.boxes.tolist(), detections.scores.tolist(), detections.classes.tolist()):
        box = [min(max(v, 0.0), limit) for v, limit in zip(box, (width, height, width, height))]
        if box[2] <= box[0] or box[3] <= box[1]:
            continue  # SAHI refuses an empty box
        predictions.append(ObjectPrediction(bbox=box, category_id=int(cls), score=float(score), category_name=str(cls),
                                            shift_amount=[0, 0], full_shape=[height, width]))
    return predictions


def _merge(predictions: list, config: SlicingConfig) -> list:
    from sahi.postprocess.backends import get_postprocess_backend, set_postprocess_backend
    from sahi.predict import POSTPROCESS_NAME_TO_CLASS

    if len(predictions) < 2:
        return predictions
    if get_postprocess_backend() != "numpy":
        # "auto" picks numba, or torchvision where a GPU is: one backend keeps outputs identical on every worker
        set_postprocess_backend("numpy")
    merge = POSTPROCESS_NAME_TO_CLASS[config.postprocess](match_threshold=config.match_threshold,
                                                           match_metric=config.match_metric, class_agnostic=False)
    return merge(predictions)


def _to_detections(predictions, taxonomy: str) -> Detections:
    """SAHI's predictions as Detections, in a fixed order (score, then position): merging visits
    dictionaries built from its inputs, and the order must not depend on anything else."""
    rows = sorted(((-float(p.score.value), *p.bbox.to_xyxy(), int(p.category.id)) for p in predictions))
    if not rows:
        return Detections.empty(taxonomy)
    values = np.array(rows, np.float64)
    return Detections(values[:, 1:5], -values[:, 0], values[:, 5].astype(np.int64), taxonomy)
