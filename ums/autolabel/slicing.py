"""Sliced detection (SAHI) for any detector of the project, and when slicing pays.

A detector sees its input shrunk to ``image_size`` pixels: a person of 12 native pixels in a
2,600 px wide view becomes 3 pixels, below what a COCO detector resolves. Slicing runs the
detector on overlapping windows at the image's own sampling and merges the windows' boxes
(``sahi.predict.get_sliced_prediction``); a full-image pass keeps what only the whole view shows.
``auto`` slices when the smallest object of interest (``min_object_m``, a person seen from above)
would fall under ``min_object_px`` in a full-image pass (docs/architecture.md keeps defaults here,
in the config).

Every detector kind slices the same way: :class:`DetectorSlices` adapts the project's
``Detector`` protocol (``detect(image) -> Detections``) to SAHI's ``DetectionModel``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ums.detections import Detections

SliceMode = Literal["auto", "always", "never"]


class SlicingConfig(BaseModel):
    """How sliced detection cuts and merges, and what ``slice: auto`` weighs."""

    model_config = ConfigDict(extra="forbid")

    size: int = Field(640, ge=32, description="slice side in pixels of the image the detector is given")
    overlap: float = Field(0.2, ge=0, lt=1, description="share of a slice its neighbour repeats")
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


def decide(mode: SliceMode, size: tuple[int, int], gsd_m: float | None, input_px: int,
           config: SlicingConfig) -> SliceDecision:
    """Slice with ``always``; with ``auto`` when the image is larger than one slice and the smallest
    object would be under ``min_object_px`` in a full pass. An unknown range never slices: nothing
    says the objects are small, and slicing multiplies the detector's cost."""
    object_px = full_pass_object_px(gsd_m, size, input_px, config)
    larger_than_a_slice = max(size) > config.size
    small = object_px is not None and object_px < config.min_object_px
    sliced = mode == "always" or (mode == "auto" and larger_than_a_slice and small)
    return SliceDecision(sliced, slice_count(size, config) if sliced else 0, gsd_m, object_px)


def slice_windows(size: tuple[int, int], config: SlicingConfig) -> list[list[int]]:
    """SAHI's windows (x0, y0, x1, y1) over an image of ``size`` (w, h)."""
    from sahi.slicing import get_slice_bboxes

    width, height = size
    return get_slice_bboxes(height, width, slice_height=config.size, slice_width=config.size,
                            overlap_height_ratio=config.overlap, overlap_width_ratio=config.overlap)


def slice_count(size: tuple[int, int], config: SlicingConfig) -> int:
    return len(slice_windows(size, config))


def sliced_detect(detector, image: np.ndarray, config: SlicingConfig) -> Detections:
    """Detections of ``detector`` on overlapping slices of ``image`` (and on the whole of it with
    ``full_image_pass``), merged by SAHI, in the image's pixels and the detector's taxonomy."""
    from sahi.postprocess.backends import get_postprocess_backend, set_postprocess_backend
    from sahi.predict import get_sliced_prediction

    if get_postprocess_backend() != "numpy":
        # "auto" picks numba, or torchvision where a GPU is: one backend keeps outputs identical on every worker
        set_postprocess_backend("numpy")
    result = get_sliced_prediction(
        image, DetectorSlices(detector), slice_height=config.size, slice_width=config.size,
        overlap_height_ratio=config.overlap, overlap_width_ratio=config.overlap,
        perform_standard_pred=config.full_image_pass, postprocess_type=config.postprocess,
        postprocess_match_metric=config.match_metric, postprocess_match_threshold=config.match_threshold,
        verbose=0, force_postprocess_type=True)
    return _to_detections(result.object_prediction_list, detector.taxonomy)


def _to_detections(predictions, taxonomy: str) -> Detections:
    """SAHI's predictions as Detections, in a fixed order (score, then position): merging visits
    dictionaries built from its inputs, and the order must not depend on anything else."""
    rows = sorted(((-float(p.score.value), *p.bbox.to_xyxy(), int(p.category.id)) for p in predictions))
    if not rows:
        return Detections.empty(taxonomy)
    values = np.array(rows, np.float64)
    return Detections(values[:, 1:5], -values[:, 0], values[:, 5].astype(np.int64), taxonomy)


def _detection_model_base():
    from sahi.models.base import DetectionModel

    return DetectionModel


class DetectorSlices(_detection_model_base()):
    """The project's ``Detector`` as a SAHI ``DetectionModel``: SAHI cuts and merges, ``detect``
    finds. Images are passed through as they are (BGR or grey, as ``detect`` takes them)."""

    def __init__(self, detector):
        config = getattr(detector, "config", None)
        super().__init__(model=detector, confidence_threshold=float(getattr(config, "confidence", 0.0)),
                         category_mapping=None, load_at_init=True)

    def set_device(self, device: str | None = None) -> None:
        # SAHI's select_device sets CUDA_VISIBLE_DEVICES=-1 for "cpu", hiding the GPU from SAM in this process
        self.device = device or "cpu"

    def set_model(self, model, **kwargs) -> None:
        self.model = model
        self.category_mapping = {}

    def load_model(self) -> None:
        raise ValueError("DetectorSlices wraps a loaded detector")

    def perform_inference(self, image: np.ndarray) -> None:
        self._original_predictions = self.model.detect(image)
        self._original_shapes = [image.shape]

    def _create_object_prediction_list_from_original_predictions(self, shift_amount_list=[[0, 0]],  # noqa: B006
                                                                 full_shape_list=None) -> None:
        from sahi.prediction import ObjectPrediction
        from sahi.utils.compatibility import fix_full_shape_list, fix_shift_amount_list

        shift = [int(v) for v in fix_shift_amount_list(shift_amount_list)[0]]
        shapes = fix_full_shape_list(full_shape_list)
        full_shape = [int(v) for v in shapes[0]] if shapes else list(self._original_shapes[0][:2])
        detections: Detections = self._original_predictions
        predictions = []
        for box, score, cls in zip(detections.boxes.tolist(), detections.scores.tolist(), detections.classes.tolist()):
            box = [max(0.0, v) for v in box]
            if box[2] <= box[0] or box[3] <= box[1]:
                continue  # SAHI refuses an empty box
            predictions.append(ObjectPrediction(bbox=box, category_id=int(cls), score=float(score),
                                                category_name=str(cls), shift_amount=shift, full_shape=full_shape))
        self._object_prediction_list_per_image = [predictions]
