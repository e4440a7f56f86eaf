"""Stage ``autolabel``: detect on both modalities of every aligned pair, merge, segment, store.

Per pair: the detector runs on the visible frame at its own sampling over the thermal grid (the
source frame's region that covers it, ``visible_resolution: native``; ums/autolabel/native.py maps
its boxes onto the grid) or on the aligned visible image, and on the thermal image (optionally
upsampled); either is sliced (ums/autolabel/slicing.py) when a person would be too small for the
detector in one full-image pass. Detections are mapped to the UMS taxonomy
(``labels/mappings.yaml``), merged across modalities with provenance, and, unless masks are off,
segmented by SAM prompted with all boxes at once (on the image the visible detector saw: native
masks are warped onto the grid). Labels land in the
workspace as automatic labels; human and reviewed labels are never touched. A capture already
labelled is skipped unless ``force``, which replaces only its unreviewed automatic labels.
Outputs per pair in ``autolabel/<capture_id>/``: ``semantic.png`` (0 = background, UMS id + 1)
and ``preview.jpg`` (boxes and masks drawn on both images, for people to look at).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace
from functools import cache, lru_cache
from pathlib import Path
from typing import Callable, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ums.core.atomic import read_image, write_image
from ums.detections import Detections, drop_repeats
from ums.autolabel.detectors import DetectorConfig, load_detector
from ums.autolabel.native import (
    GridToVisible,
    NativeRegion,
    boxes_from_grid,
    boxes_to_grid,
    grid_maps,
    masks_to_grid,
    native_image,
    native_points,
    native_region,
)
from ums.autolabel.sam import SamConfig, load_sam, segment_boxes, segment_boxes_in_chunks
from ums.autolabel.slicing import (
    SliceDecision,
    SlicingConfig,
    cheaper_windows,
    decide,
    ground_sample_distance,
    sliced_detect,
    warm_spots,
)
from ums.camera import CameraProfile, profile_for_model
from ums.crop import DECODE_FLAGS, capture_range, decode_frame, frame_intrinsics
from ums.masks import decode_rle, encode_rle, semantic_map
from ums.previews import preview
from ums.autolabel.merge import MergeConfig, merge_modalities
from ums.core.records import AutolabelResult, CropResult, FrameRecord, LabelRecord
from ums.core.runner import (
    CaptureStage,
    Outcome,
    StageContext,
    StageReport,
    Task,
    outputs_intact,
    record_capture_outcome,
    run_capture_stage,
)
from ums.core.stage_names import ALIGN as ALIGN_STAGE
from ums.core.stage_names import AUTOLABEL as STAGE
from ums.core.stage_names import CROP as CROP_STAGE
from ums.taxonomy import DATASET_TAXONOMY as TARGET_TAXONOMY
from ums.taxonomy import load_mapping, load_taxonomy
from ums.core.workspace import Workspace

class AutolabelConfig(BaseModel):
    """Settings of ``ums autolabel`` (``pipelines/autolabel.yaml`` holds the defaults)."""

    model_config = ConfigDict(extra="forbid")

    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    sam: SamConfig = Field(default_factory=SamConfig)
    masks: bool = True
    merge: MergeConfig = Field(default_factory=MergeConfig)
    visible_resolution: Literal["native", "aligned"] = Field(
        "native", description="native: detect on the source visible frame's own pixels over the thermal grid "
        "(~4x finer with the M30T wide camera); aligned: on the aligned visible image")
    thermal_upsample: float = Field(1.0, ge=1.0, le=8.0, description="enlarge the thermal image this much for "
                                    "its detector (with slicing: small, warm objects get more detector pixels)")
    slice: Literal["auto", "always", "never"] = Field(
        "auto", description="sliced detection; auto: when a person would be under slicing.min_object_px "
        "in a full-image pass, from the range and the focal length")
    slicing: SlicingConfig = Field(default_factory=SlicingConfig)
    force: bool = Field(False, description="replace unreviewed automatic labels of labelled captures")


@dataclass
class AutolabelReport(StageReport):
    labels: int = 0
    per_class: dict[str, int] = field(default_factory=dict)
    other_models: dict[str, int] = field(default_factory=dict)  # pairs kept that another model labelled
    class_names: list[str] = field(default_factory=lambda: load_taxonomy(TARGET_TAXONOMY).names, repr=False)

    @property
    def labelled(self) -> int:
        return self.done

    def rows(self) -> list[tuple[str, object]]:
        rows = [("pairs labelled now", self.done), ("already labelled (skipped)", self.skipped),
                ("failed", self.failed), ("automatic labels written", self.labels)]
        if self.not_run:
            rows.append(("not run (rerun to resume)", self.not_run))
        rows += [(f"  {name}", count) for name, count in sorted(self.per_class.items())]
        return rows


class AutolabelTask(Task):
    align_files: dict[str, str]
    visible_frame: FrameRecord  # the source frame crop resampled: native detection decodes it
    crop: CropResult
    align_transform: list[list[float]] | None = None  # aligned pixel -> crop grid pixel
    align_flow: str | None = None  # or align's dense flow (the learned method), relative to the workspace
    protected: list[LabelRecord]  # human and reviewed labels: they stay, and new boxes may not repeat them
    config: AutolabelConfig
    model: str


def autolabel_workspace(workspace: Workspace, config: AutolabelConfig, executor=None) -> AutolabelReport:
    """Label every aligned pair not labelled yet (all of them with ``force``).

    ``executor`` says where the tasks run (the executor settings of ``ums.core.executors``; None: the defaults).
    """
    _models(config.detector, config.sam if config.masks else None)  # fails here, naming --detector, not once per pair
    return run_capture_stage(workspace, AUTOLABEL, config, AutolabelReport(), executor)


def plan(workspace: Workspace, config: AutolabelConfig) -> list[AutolabelTask]:
    model = _model_name(config)
    return [
        AutolabelTask(key=capture.capture_id, capture_id=capture.capture_id, workspace_root=workspace.root,
                      fingerprint=model, file=capture.frames["T"].path, align_files=align["files"],
                      inputs=align.get("outputs") or {}, inputs_stage=ALIGN_STAGE,
                      visible_frame=capture.frames[crop.visible_camera], crop=crop,
                      align_transform=align.get("transform"), align_flow=align.get("flow"),
                      protected=[label for label in workspace.labels(capture.capture_id) if label.protected],
                      config=config, model=model)
        for capture, align in workspace.captures_with(ALIGN_STAGE)
        for crop in [CropResult.model_validate(workspace.stage_result(capture.capture_id, CROP_STAGE))]
    ]


def labelled(context: StageContext, task: AutolabelTask) -> dict | None:
    """A labelled pair stays as it is, whatever model labelled it, unless ``force``: relabelling
    replaces automatic labels a person may already have looked at."""
    if context.config.force:
        return None
    previous = context.workspace.stage_result(task.key, STAGE)
    if previous is None or previous["status"] != "done":
        return None
    return previous if outputs_intact(context.workspace, previous) else None


def record_labels(context: StageContext, outcome: Outcome) -> None:
    """The new automatic labels (human and reviewed ones untouched), then the stage result."""
    report: AutolabelReport = context.report
    if outcome.current:
        model = outcome.result.get("model")
        if model and model != outcome.task.model:
            report.other_models[model] = report.other_models.get(model, 0) + 1
    elif outcome.result is not None:
        result = outcome.result
        result.written = context.workspace.replace_auto_labels(outcome.task.key, result.labels, select=drop_repeats)
        report.labels += result.written
        for label in result.labels:
            name = report.class_names[label.class_id]
            report.per_class[name] = report.per_class.get(name, 0) + 1
    record_capture_outcome(context, outcome)


def other_model_notice(context: StageContext) -> None:
    """Say when the pairs kept were labelled by another model than the one asked for now."""
    report: AutolabelReport = context.report
    model = _model_name(context.config)
    report.notices += [f"{count} pair(s) were labelled by {name}, not {model}: pass --force to relabel them "
                       "(human and reviewed labels stay)" for name, count in sorted(report.other_models.items())]


def _uses_gpu(config: AutolabelConfig) -> bool:
    return any(device.startswith("cuda") for device in (config.detector.device, config.sam.device))


def process(task: AutolabelTask) -> AutolabelResult:
    """Detect on both images, merge, segment, and draw the pair's label outputs."""
    config = task.config
    detector, predictor = _models(config.detector, config.sam if config.masks else None)
    mapping = load_mapping(detector.taxonomy, TARGET_TAXONOMY)  # `auto` and open-vocabulary models name their own
    thermal, visible = _pair_images(task)
    view = _visible_view(task, visible)
    spots = _warm_spot_finder(thermal, view.grid_gsd_m, config)
    visible_found, visible_decision = _detect_visible(detector, view, config, spots)
    thermal_found, thermal_decision = _detect_thermal(detector, thermal, view.grid_gsd_m, config, spots)
    per_modality = {"visible": visible_found.mapped(mapping), "thermal": thermal_found.mapped(mapping)}
    merged = merge_modalities(per_modality, thermal.shape[1], thermal.shape[0], config.merge)
    masks = _masks(predictor, config.sam.image, view, thermal, merged) if predictor else None
    prompts = _prompts(detector, mapping, [visible_found, thermal_found])
    labels = [
        LabelRecord(taxonomy=TARGET_TAXONOMY, class_id=int(cls), box=tuple(float(v) for v in box),
                    score=float(score), mask=encode_rle(masks[i]) if masks is not None else None,
                    model=task.model, provenance=merged.provenance[i], prompt=prompts.get(int(cls)))
        for i, (box, score, cls) in enumerate(zip(merged.boxes, merged.scores, merged.classes))
    ]
    fresh = drop_repeats(labels, task.protected)
    files = _write_outputs(task, visible, thermal, task.protected + fresh)
    decisions = {"visible": visible_decision, "thermal": thermal_decision}
    return AutolabelResult(model=task.model, detections={k: len(v) for k, v in per_modality.items()},
                           per_modality={k: detection_rows(v) for k, v in per_modality.items()},
                           merged=len(merged), masks=masks is not None, files=files, labels=fresh,
                           visible_resolution=config.visible_resolution,
                           visible_region=view.region.as_list() if view.region else None,
                           **_slicing_record(decisions))


# -- the visible view: native or aligned -------------------------------------------------------------
@dataclass
class VisibleView:
    """The image the visible detector gets and how its pixels relate to the aligned grid."""

    image: np.ndarray
    geometry: GridToVisible
    gsd_m: float | None  # metres per pixel of ``image``
    grid_gsd_m: float | None  # metres per aligned-grid pixel
    region: NativeRegion | None = None  # native: where ``image`` lies in the ideal visible frame


def _visible_view(task: AutolabelTask, aligned_visible: np.ndarray) -> VisibleView:
    """The native region of the source frame (``visible_resolution: native``) or the aligned image,
    with the ground sample distances ``slice: auto`` weighs."""
    geometry = _grid_geometry(task, aligned_visible.shape[:2])
    K, distortion = _visible_lens(task.visible_frame, task.crop)
    native_gsd = ground_sample_distance(_range_m(task), float(K[0, 0]))
    grid_gsd = native_gsd * geometry.scale() if native_gsd is not None else None
    if task.config.visible_resolution == "aligned":
        return VisibleView(aligned_visible, geometry, grid_gsd, grid_gsd)
    frame = task.visible_frame
    region = native_region(geometry, (frame.width, frame.height))
    image = native_image(decode_frame(frame, DECODE_FLAGS[1]), region, K, distortion)
    return VisibleView(image, geometry, native_gsd, grid_gsd, region)


def _grid_geometry(task: AutolabelTask, grid_shape: tuple[int, int]) -> GridToVisible:
    return grid_geometry(task.crop, task.align_transform, task.align_flow, task.workspace_root,
                         (grid_shape[1], grid_shape[0]))


def grid_geometry(crop: CropResult, transform: list[list[float]] | None, flow: str | None, workspace_root: Path,
                  size: tuple[int, int]) -> GridToVisible:
    """Aligned grid -> ideal visible pixel, from crop's and align's stored results."""
    crop_to_visible = np.asarray(crop.thermal_to_visible) @ np.asarray(crop.output_to_thermal)
    if flow is not None:
        return GridToVisible(crop_to_visible, size, flow=np.load(workspace_root / flow))
    if transform is None:
        raise ValueError("the align result names no transform (rerun `ums align`)")
    return GridToVisible(crop_to_visible, size, transform=np.asarray(transform, np.float64))


def _visible_lens(frame: FrameRecord, crop: CropResult) -> tuple[np.ndarray, np.ndarray]:
    """K and distortion of the full-resolution visible frame, as crop took them."""
    profile = (CameraProfile.load(crop.profile) if crop.profile
               else profile_for_model(frame.exif.model) or CameraProfile.load())  # a crop stored before it kept its profile
    used = crop.intrinsics_source.get("visible", "profile")
    K, distortion, source = frame_intrinsics(frame, profile.cameras[crop.visible_camera], frame.width, frame.height,
                                             use_xmp=used != "profile")
    if source != used:
        raise ValueError(f"{frame.path}: its intrinsics now come from the {source} where crop used the {used} "
                         "(rerun `ums crop`)")
    return K, distortion


def _range_m(task: AutolabelTask) -> float | None:
    """Crop's range to the scene, else the frame's XMP (range finder, or altitude over the gimbal angle)."""
    if task.crop.distance_m is not None:
        return task.crop.distance_m
    distance = capture_range(task.visible_frame)[0]
    return distance if math.isfinite(distance) else None


# -- detection ---------------------------------------------------------------------------------------
Spots = Callable[[], np.ndarray]  # warm spots (x, y; pixel-edge coordinates) of an image, found when asked


def _warm_spot_finder(thermal: np.ndarray, grid_gsd_m: float | None, config: AutolabelConfig) -> Spots | None:
    """The thermal image's isolated warm spots on the grid, found once and only if a slicing asks
    (``windows: warm-spots``; their ring filter is the cost, up to tens of ms at low altitude)."""
    if config.slicing.windows != "warm-spots":
        return None
    object_px = config.slicing.min_object_m / grid_gsd_m if grid_gsd_m else None
    return cache(lambda: warm_spots(thermal, object_px, config.slicing))


def _detect(detector, image: np.ndarray, gsd_m: float | None, config: AutolabelConfig,
            spots: Spots | None = None) -> tuple[Detections, SliceDecision]:
    """One image's detections: a full pass, or slices (on the grid, or on ``spots``, the warm spots in
    this image's pixels, where their windows cost less than the grid; no spot: the full pass only)."""
    size = (image.shape[1], image.shape[0])
    decision = decide(config.slice, size, gsd_m, config.detector.image_size, config.slicing)
    if not decision.sliced:
        return detector.detect(image), decision
    windows = cheaper_windows(spots(), size, decision, config.slicing) if spots is not None else None
    if windows is not None:
        decision = replace(decision, slices=len(windows), windows="warm-spots")
    return sliced_detect(detector, image, config.slicing, windows, decision.zoom), decision


def _detect_visible(detector, view: VisibleView, config: AutolabelConfig,
                    spots: Spots | None = None) -> tuple[Detections, SliceDecision]:
    """Visible detections on the aligned grid (the detector's taxonomy)."""
    if view.region is None:
        return _detect(detector, view.image, view.gsd_m, config, spots)
    found, decision = _detect(detector, view.image, view.gsd_m, config,
                              None if spots is None else lambda: native_points(spots(), view.region, view.geometry))
    boxes, kept = boxes_to_grid(found.boxes, view.region, view.geometry)
    return Detections(boxes, found.scores[kept], found.classes[kept], found.taxonomy), decision


def _detect_thermal(detector, thermal: np.ndarray, gsd_m: float | None, config: AutolabelConfig,
                    spots: Spots | None = None) -> tuple[Detections, SliceDecision]:
    """Thermal detections on the grid; on an enlarged copy with ``thermal_upsample`` (its boxes and
    spots scaled: a resize maps pixel edges linearly)."""
    factor = config.thermal_upsample
    if factor == 1.0:
        return _detect(detector, thermal, gsd_m, config, spots)
    height, width = thermal.shape[:2]
    size = (round(width * factor), round(height * factor))
    enlarged = cv2.resize(thermal, size, interpolation=cv2.INTER_CUBIC)
    scale = np.array([size[0] / width, size[1] / height] * 2, np.float32)
    found, decision = _detect(detector, enlarged, gsd_m / factor if gsd_m is not None else None, config,
                              None if spots is None else lambda: spots() * scale[:2])
    return Detections(found.boxes / scale, found.scores, found.classes, found.taxonomy), decision


def _slicing_record(decisions: dict[str, SliceDecision]) -> dict[str, dict]:
    return {
        "slicing": {name: d.mode for name, d in decisions.items()},
        "slices": {name: d.slices for name, d in decisions.items()},
        "gsd_m": {name: round(d.gsd_m, 6) for name, d in decisions.items() if d.gsd_m is not None},
        "object_px": {name: round(d.object_px, 2) for name, d in decisions.items() if d.object_px is not None},
        "slice_windows": {name: d.windows for name, d in decisions.items() if d.sliced},
        "zoom": {name: d.zoom for name, d in decisions.items() if d.sliced},
    }


def _prompts(detector, mapping, found: list[Detections]) -> dict[int, str]:
    """Per UMS class, what an open-vocabulary detector was asked to find (its ``prompts`` are keyed by
    its own class ids): the prompts of the detected classes that map to it."""
    prompts = getattr(detector, "prompts", None)
    if not prompts:
        return {}
    by_class: dict[int, set[str]] = {}
    for detections in found:
        for source in np.unique(detections.classes).tolist():
            target = mapping(source)
            if target is not None and source in prompts:
                by_class.setdefault(int(target), set()).add(prompts[source])
    return {target: "; ".join(sorted(texts)) for target, texts in by_class.items()}


def detection_rows(detections: Detections) -> list[list[float]]:
    return [[*(round(float(v), 2) for v in box), round(float(score), 4), int(cls)]
            for box, score, cls in zip(detections.boxes, detections.scores, detections.classes)]


def _models(detector_config: DetectorConfig, sam_config: SamConfig | None):
    """The detector and SAM, loaded once per process (a pool or Dask worker keeps them for every task)."""
    return _load_models(detector_config.model_dump_json(), sam_config.model_dump_json() if sam_config else None)


@lru_cache(maxsize=2)
def _load_models(detector_json: str, sam_json: str | None):
    detector = load_detector(DetectorConfig.model_validate_json(detector_json))
    return detector, load_sam(SamConfig.model_validate_json(sam_json)) if sam_json else None


def _pair_images(task: AutolabelTask) -> tuple[np.ndarray, np.ndarray]:
    thermal = read_image(task.workspace_root / task.align_files["ir"], cv2.IMREAD_GRAYSCALE)
    visible = read_image(task.workspace_root / task.align_files["vis"], cv2.IMREAD_COLOR)
    if thermal is None or visible is None:
        raise ValueError(f"cannot read the aligned pair of {task.key} (rerun `ums align`)")
    return thermal, visible


def _masks(predictor, rule: str, view: VisibleView, thermal: np.ndarray, merged: Detections) -> np.ndarray:
    if rule == "thermal":
        return segment_boxes(predictor, thermal, merged)[0]
    from_visible = _visible_masks(predictor, view, merged)
    if rule == "visible":
        return from_visible
    from_thermal = segment_boxes(predictor, thermal, merged)[0]
    thermal_better = np.array([p.get("thermal", 0.0) > p.get("visible", 0.0) for p in merged.provenance], bool)
    return np.where(thermal_better[:, None, None], from_thermal, from_visible)


def _visible_masks(predictor, view: VisibleView, merged: Detections) -> np.ndarray:
    """Grid masks from the visible image: on the native view SAM gets the boxes mapped there and its
    masks come back to the grid (its encoder sees 1024 px of the native view, not 640 of the aligned one)."""
    if view.region is None:
        return segment_boxes(predictor, view.image, merged)[0]
    native_boxes = boxes_from_grid(merged.boxes, view.region, view.geometry)
    maps = grid_maps(view.region, view.geometry)
    chunks = [masks_to_grid(masks, maps, view.geometry.scale())
              for masks in segment_boxes_in_chunks(predictor, view.image, native_boxes)]
    width, height = view.geometry.size
    return np.concatenate(chunks) if chunks else np.zeros((0, height, width), bool)


def _write_outputs(task: AutolabelTask, visible: np.ndarray, thermal: np.ndarray,
                   labels: list[LabelRecord]) -> dict[str, str]:
    h, w = thermal.shape
    with_masks = [label for label in labels if label.mask]
    masks = np.array([decode_rle(label.mask) for label in with_masks]).reshape(-1, h, w)
    semantic = semantic_map(masks, np.array([label.class_id for label in with_masks]),
                            np.array([label.score or 1.0 for label in with_masks]), (h, w))
    folder = task.output_dir(STAGE)
    write_image(folder / "semantic.png", semantic, durable=False)
    write_image(folder / "preview.jpg", preview(visible, thermal, labels, semantic), durable=False)
    return {"semantic": task.relative(folder / "semantic.png"), "preview": task.relative(folder / "preview.jpg")}


def _model_name(config: AutolabelConfig) -> str:
    """The detector (and SAM) file names with a short content hash: which model made a label."""
    def describe(path: Path | None) -> str:
        if path is None:
            return "none"
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:8]
        return f"{Path(path).name}@{digest}"

    name = describe(config.detector.weights)
    if config.detector.classes:  # an open-vocabulary model's labels depend on what it was asked to find
        name += f"[{','.join(config.detector.classes)}]"
    return f"{name}+{describe(config.sam.checkpoint)}" if config.masks else name


AUTOLABEL = CaptureStage(STAGE, plan, process, current=labelled, record=record_labels, finish=other_model_notice,
                         gpu=_uses_gpu, nothing_to_do="no aligned pair (run `ums align` first)")
