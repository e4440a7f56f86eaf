"""Stage ``align``: register each cropped pair, with a per-flight rig offset as the fallback.

Pass 1 registers every cropped pair (classical ECC by default) and keeps the estimate and its
confidence. The rig is rigid, so the median translation of the confident frames of a flight is a
far better estimate of the static offset than any single frame (0.17 px against 1.4 px per frame
in docs/reference/registration.md §4.3). Pass 2 decides per frame: its own estimate when confident and close to
the flight offset, else the flight offset; a frame with neither is flagged for review, never
silently called aligned. Every decision is recorded.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ums.align.ecc import ECC_VERSION, RegistrationFailure
from ums.align.flow import warp_with_flow
from ums.align.registration import DEFAULT_MOTION, MIN_CONSISTENT, register
from ums.core.atomic import read_image, write_bytes, write_image
from ums.core.records import AlignDecision, AlignEstimate, AlignFiles, CropResult, Issue
from ums.core.executors import ExecutorSettings
from ums.core.runner import (
    CaptureStage,
    Outcome,
    Pass,
    StageContext,
    StageReport,
    Task,
    outputs_intact,
    record_capture_outcome,
    run_capture_stage,
    settings_fingerprint,
)
from ums.core.stage_names import ALIGN as STAGE
from ums.core.stage_names import CROP as CROP_STAGE
from ums.core.workspace import Workspace


class AlignConfig(BaseModel):
    """Settings of ``ums align`` (``pipelines/align.yaml`` holds the defaults)."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["ecc", "learned"] = Field("ecc", description="ecc: global ECC; learned: ECC then "
                        "the residual refiner (the cascade)")
    weights: Path | None = Field(None, description="learned: a refiner checkpoint (ums align-train); "
                                 "none: the refiner shipped with ums")
    device: str = "cpu"
    motion: Literal["translation", "euclidean", "similarity"] = Field(DEFAULT_MOTION,
                        description="ECC's global model (also the cascade's first step)")
    flight_scale: bool = Field(True, description="give each frame its flight's scale (the median of the confident "
                               "frames) in place of its own")
    min_scale_sigmas: float = Field(3.0, ge=0, description="a flight scale closer to 1 than this many standard "
                                    "errors of its frames' median is taken as 1 (0: always the median)")
    min_consistent: float = Field(MIN_CONSISTENT, ge=0, le=1, description="learned: the share of forward-backward "
                                  "consistent pixels below which a frame keeps ECC's answer")
    levels: int = Field(3, ge=1, le=5)
    score_threshold: float = Field(0.3, ge=0, le=1, description="ECC correlation on gradient maps")
    max_offset_deviation_px: float = Field(6.0, gt=0, description="a confident frame farther than "
                                           "this from the flight offset falls back to the offset")
    min_confident_frames: int = Field(3, ge=1, description="frames needed for a flight offset")
    overlay: Literal["checkerboard", "edges"] = "checkerboard"


@dataclass
class AlignReport(StageReport):
    """Per capture: its decision (when aligned), or failed, or not run; ``done``/``skipped`` say
    whether its images were written now or kept."""

    frame: int = 0
    flight_offset: int = 0
    unconfident: int = 0
    reused: int = 0
    offsets: dict[str, list[list[float]] | None] = field(default_factory=dict)

    def rows(self) -> list[tuple[str, object]]:
        rows = [
            ("aligned by their own estimate", self.frame),
            ("aligned by the flight offset", self.flight_offset),
            ("flagged: low confidence, no offset", self.unconfident),
            ("failed", self.failed),
        ]
        if self.not_run:
            rows.append(("not run (rerun to resume)", self.not_run))
        rows += [("images written now", self.done), ("images kept (already written)", self.skipped),
                 ("estimates reused", self.reused)]
        for flight, offset in self.offsets.items():
            if offset is None:
                rows.append((f"flight offset {flight}", "none (too few confident frames)"))
                continue
            tx, ty, angle, scale = _similarity_parameters(offset)
            rows.append((f"flight offset {flight}",
                         f"({tx:+.2f}, {ty:+.2f}) px, {np.degrees(angle):+.3f} deg, scale {scale:.4f}"))
        return rows


class EstimateTask(Task):
    crop: CropResult
    config: AlignConfig
    flight: str  # the flight root: frames of one flight share a rig offset


class RenderTask(Task):
    crop_files: dict[str, str]
    decision: AlignDecision
    overlay: str


def align_workspace(workspace: Workspace, config: AlignConfig | None = None,
                    executor: ExecutorSettings | None = None) -> AlignReport:
    """Register every cropped pair (pass 1, on the executor), find each flight's rig offset (in the
    driver), decide per frame, and write the aligned images and overlays (pass 2, on the executor)."""
    config = config or AlignConfig()
    if config.method == "learned":
        from ums.align.learned.inference import cached_model

        cached_model(config.weights, config.device)  # fail now, naming --weights, not once per frame
    return run_capture_stage(workspace, ALIGN, config, AlignReport(), executor)


def plan(workspace: Workspace, config: AlignConfig) -> list[EstimateTask]:
    return [
        EstimateTask(key=capture.capture_id, capture_id=capture.capture_id, workspace_root=workspace.root,
                     fingerprint=_fingerprint(crop, config), file=capture.frames["T"].path,
                     inputs=crop.get("outputs", {}), inputs_stage=CROP_STAGE,
                     crop=CropResult.model_validate(crop), config=config, flight=capture.flight_root)
        for capture, crop in workspace.captures_with(CROP_STAGE)
    ]


# -- pass 1: each frame's own estimate -------------------------------------------------------------
def stored_estimate(context: StageContext, task: EstimateTask) -> AlignEstimate | None:
    """A frame's estimate is kept while its crop and the registration settings are unchanged."""
    previous = context.workspace.stage_result(task.key, STAGE)
    if previous and previous.get("fingerprint") == task.fingerprint and "estimate" in previous:
        return AlignEstimate.model_validate(previous["estimate"])
    return None


def record_estimate(context: StageContext, outcome: Outcome) -> None:
    """Keep the estimate for pass 2 and store a new one at once (status ``estimated``), so a killed
    run does not redo it. A frame whose registration raised is failed now and retried next run."""
    report: AlignReport = context.report
    estimates = context.state.setdefault("estimates", {})
    if outcome.current:
        estimates[outcome.task.key] = outcome.result
        report.reused += 1
    elif outcome.result is None:
        record_capture_outcome(context, outcome)
    else:
        estimates[outcome.task.key] = outcome.result
        context.workspace.record_outcome(outcome.task.key, STAGE, "estimated",
                                         {"fingerprint": outcome.task.fingerprint, "estimate": outcome.result.stored()}, [])


# -- between the passes: the flight's offset, and each frame's decision ----------------------------
def plan_renders(context: StageContext, estimated: Pass) -> Pass:
    """In the driver: each flight's rig offset from its frames' estimates, each frame's decision, and
    the render pass for the frames that have a transform."""
    config, report = context.config, context.report
    estimates: dict[str, AlignEstimate] = context.state.get("estimates", {})
    tasks = [task for task in estimated.tasks if task.key in estimates]  # not estimated: failed, or not run
    offsets = flight_offsets([(t.capture_id, t.flight) for t in tasks], estimates, config)
    report.offsets = {flight: offsets.get(flight) for flight in sorted({t.flight for t in estimated.tasks})}
    renders = []
    for task in tasks:
        decision = decide(estimates[task.key], offsets.get(task.flight), config, task.crop.output_size)
        if decision.decision == "failed":
            _store_decision(context, task, decision, None)
            report.failed += 1
        else:
            renders.append(_render_task(task, decision, config))
    context.state["estimate_tasks"] = {task.key: task for task in tasks}
    return Pass(renders, render_outputs, rendered_files, record_render, "align: write")


# -- pass 2: the aligned image and the overlay -----------------------------------------------------
def rendered_files(context: StageContext, render: RenderTask) -> AlignFiles | None:
    """The images written for the same geometry, while intact."""
    previous = context.workspace.stage_result(render.key, STAGE)
    if (previous is None or previous["status"] != "done" or previous.get("render_fingerprint") != render.fingerprint
            or not outputs_intact(context.workspace, previous)):
        return None
    return AlignFiles(files=previous["files"], outputs=previous.get("outputs"))


def record_render(context: StageContext, outcome: Outcome) -> None:
    report: AlignReport = context.report
    render: RenderTask = outcome.task
    if outcome.result is None:
        record_capture_outcome(context, outcome)
        return
    _store_decision(context, context.state["estimate_tasks"][render.key], render.decision, outcome.result,
                    render.fingerprint)
    setattr(report, render.decision.decision, getattr(report, render.decision.decision) + 1)
    report.count(outcome)


def _render_task(task: EstimateTask, decision: AlignDecision, config: AlignConfig) -> RenderTask:
    geometry = json.dumps({"transform": decision.transform, "flow": decision.flow, "overlay": config.overlay})
    fingerprint = hashlib.sha256(f"{task.fingerprint}|{geometry}".encode()).hexdigest()[:16]
    return RenderTask(key=task.key, capture_id=task.capture_id, workspace_root=task.workspace_root,
                      fingerprint=fingerprint, file=task.file, inputs=task.inputs, inputs_stage=task.inputs_stage,
                      crop_files=task.crop.files, decision=decision, overlay=config.overlay)


def _store_decision(context: StageContext, task: EstimateTask, decision: AlignDecision, files: AlignFiles | None,
                    render_fingerprint: str | None = None) -> None:
    """A frame's stage result: its estimate, its decision and (when rendered) its images."""
    estimate = context.state["estimates"][task.key]
    issues = []
    if decision.decision == "failed":
        issues.append(Issue(stage=STAGE, file=task.file, capture_id=task.capture_id,
                            message=f"registration failed: {estimate.reason}"))
    elif decision.flagged:
        issues.append(Issue(stage=STAGE, file=task.file, capture_id=task.capture_id, level="warning",
                            message=decision.reason))
    result = {"fingerprint": task.fingerprint, "estimate": estimate.stored(),
              **decision.model_dump(mode="json", exclude_none=True)}
    if files is not None:
        result.update(files.stored(), render_fingerprint=render_fingerprint)
    context.report.issues.extend(issues)
    context.workspace.record_outcome(task.key, STAGE, "failed" if decision.decision == "failed" else "done", result, issues)


def _uses_gpu(config: AlignConfig) -> bool:
    return config.method == "learned" and config.device.startswith("cuda")


def _load(workspace_root: Path, files: dict[str, str], key: str, flags: int) -> np.ndarray:
    """A crop output; one that does not decode is crop's to redo, not a registration failure to keep."""
    path = workspace_root / files[key]
    image = read_image(path, flags)
    if image is None:
        raise ValueError(f"cannot decode the cropped image {files[key]}: run `ums crop` (it redoes damaged "
                         "outputs), then `ums align`")
    return image


def estimate_frame(task: EstimateTask) -> AlignEstimate:
    """One frame's own registration (or the reason it failed).

    Global models keep their 3x3 transform; dense (learned) flows go to ``align/<id>/flow.npy``."""
    config, files = task.config, task.crop.files
    fixed = _load(task.workspace_root, files, "ir", cv2.IMREAD_GRAYSCALE)
    moving = _load(task.workspace_root, files, "vis", cv2.IMREAD_COLOR)
    valid = _load(task.workspace_root, files, "valid", cv2.IMREAD_GRAYSCALE)
    try:
        options = dict(motion=config.motion, levels=config.levels, moving_mask=valid)
        if config.method == "learned":
            options.update(weights=config.weights, device=config.device, min_consistent=config.min_consistent)
        registration = register(fixed, moving, config.method, **options)
    except RegistrationFailure as exc:
        return AlignEstimate(ok=False, reason=str(exc))
    estimate = AlignEstimate(ok=True, score=registration.score,
                             converged=bool(registration.details.get("converged", True)),
                             refinement=registration.details.get("refinement"))
    if registration.transform is not None:
        estimate.transform = registration.transform.tolist()
    else:
        # a refined frame keeps the cascade's global fit too: the flight offset is built from those
        estimate.transform = registration.details.get("global_transform")
        path = task.output_dir(STAGE) / "flow.npy"
        buffer = io.BytesIO()
        np.save(buffer, registration.flow.astype(np.float32))
        write_bytes(path, buffer.getvalue(), durable=False)
        estimate.flow = task.relative(path)
    return estimate


def flight_offsets(frames: list[tuple[str, str]], estimates: dict[str, AlignEstimate],
                   config: AlignConfig) -> dict[str, list[list[float]]]:
    """Per flight, the rig offset: the median (tx, ty, angle, scale) of its confident frames, as a
    3x3 transform (flights with fewer than ``min_confident_frames`` confident frames get none).
    ``frames`` are (capture id, flight root) pairs."""
    by_flight: dict[str, list[tuple[float, float, float, float]]] = defaultdict(list)
    for capture_id, flight in frames:
        estimate = estimates[capture_id]
        if _confident(estimate, config) and estimate.transform is not None:
            by_flight[flight].append(_similarity_parameters(estimate.transform))
    offsets = {}
    for flight, values in by_flight.items():
        if len(values) >= config.min_confident_frames:
            tx, ty, angle, scale = np.median(np.array(values), axis=0)
            if abs(scale - 1.0) < config.min_scale_sigmas * scale_spread([value[3] for value in values]):
                scale = 1.0  # the rig's scale is 1 within the frames' noise: a median of noise only adds error
            c, s = float(scale * np.cos(angle)), float(scale * np.sin(angle))
            offsets[flight] = [[c, -s, float(tx)], [s, c, float(ty)], [0.0, 0.0, 1.0]]
    return offsets


def scale_spread(scales: list[float]) -> float:
    """The standard error of the median of a flight's frame scales, from their median absolute deviation
    (robust to the odd frame ECC got wrong): 1.2533 x 1.4826 x MAD / sqrt(n)."""
    values = np.asarray(scales, np.float64)
    if values.size < 2:
        return float("inf")
    mad = float(np.median(np.abs(values - np.median(values))))
    return 1.2533 * 1.4826 * mad / float(np.sqrt(values.size))


def with_scale(transform, offset, size: tuple[int, int]) -> list[list[float]]:
    """``transform`` with the scale of the flight's ``offset``, about the frame's centre.

    The rig's scale is a constant of the flight, like its offset: the median of the confident
    frames knows it better than one frame, whose free scale adds noise (a synthetic M30T flight:
    0.32 px mean per frame with its own scale, 0.31 with the flight's). Similarity is fitted about the
    image centre, where its scale and translation are nearly independent, so holding the centre
    and swapping the scale is the constrained fit to first order."""
    scale = _similarity_parameters(transform)[3]
    flight_scale = _similarity_parameters(offset)[3]
    matrix = np.asarray(transform, np.float64)
    centre = np.array([(size[0] - 1) / 2, (size[1] - 1) / 2])
    linear = matrix[:2, :2] * (flight_scale / scale)
    mapped_centre = matrix[:2, :2] @ centre + matrix[:2, 2]
    return np.vstack([np.hstack([linear, (mapped_centre - linear @ centre)[:, None]]), [0, 0, 1]]).tolist()


def _similarity_parameters(transform) -> tuple[float, float, float, float]:
    """(tx, ty, angle, scale) of a translation, Euclidean or similarity transform."""
    a, b = transform[0][0], transform[1][0]
    return transform[0][2], transform[1][2], float(np.arctan2(b, a)), float(np.hypot(a, b))


def _confident(estimate: AlignEstimate, config: AlignConfig) -> bool:
    return estimate.ok and estimate.converged and (estimate.score or 0.0) >= config.score_threshold


def decide(estimate: AlignEstimate | dict[str, Any], offset: list[list[float]] | None, config: AlignConfig,
           size: tuple[int, int] | None = None) -> AlignDecision:
    """Which transform (or dense flow) a frame gets, and why. ``size`` (width, height): the frame's,
    to hold its centre when its scale is replaced by the flight's."""
    estimate = AlignEstimate.model_validate(estimate)
    if (config.flight_scale and offset is not None and size is not None and estimate.ok
            and estimate.transform is not None and estimate.flow is None):
        estimate = estimate.model_copy(update={"transform": with_scale(estimate.transform, offset, size)})
    if not estimate.ok:
        if offset is None:
            return AlignDecision(decision="failed", flagged=True, reason=estimate.reason or "registration failed")
        return AlignDecision(decision="flight_offset", flagged=False, transform=offset,
                             reason=f"own registration failed ({estimate.reason}); flight offset used")
    own = {"transform": estimate.transform, "flow": estimate.flow}
    confident = _confident(estimate, config)
    if confident and offset is not None and estimate.transform is not None:
        transform = estimate.transform
        deviation = float(np.hypot(transform[0][2] - offset[0][2], transform[1][2] - offset[1][2]))
        if deviation > config.max_offset_deviation_px:
            return AlignDecision(decision="flight_offset", flagged=False, transform=offset,
                                 reason=f"own estimate {deviation:.1f} px from the flight offset; flight offset used")
    if confident:
        refinement = f"; {estimate.refinement}" if estimate.refinement else ""
        return AlignDecision(decision="frame", flagged=False, **own,
                             reason=f"confident (score {estimate.score:.2f}){refinement}")
    if offset is not None:
        return AlignDecision(decision="flight_offset", flagged=False, transform=offset,
                             reason=f"low confidence (score {estimate.score:.2f}); flight offset used")
    return AlignDecision(decision="unconfident", flagged=True, **own,
                         reason=f"low confidence (score {estimate.score:.2f}) and no flight offset: review the overlay")


def render_outputs(task: RenderTask) -> AlignFiles:
    """The aligned visible image and the review overlay of one frame."""
    fixed = _load(task.workspace_root, task.crop_files, "ir", cv2.IMREAD_GRAYSCALE)
    moving = _load(task.workspace_root, task.crop_files, "vis", cv2.IMREAD_COLOR)
    height, width = fixed.shape
    decision = task.decision
    if decision.flow is not None:
        aligned = warp_with_flow(moving, np.load(task.workspace_root / decision.flow))
    else:
        transform = np.asarray(decision.transform)
        aligned = cv2.warpAffine(moving, transform[:2], (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                 borderMode=cv2.BORDER_CONSTANT)
    folder = task.output_dir(STAGE)
    files = {"vis": folder / "vis.png", "overlay": folder / "overlay.jpg"}
    write_image(files["vis"], aligned, durable=False)  # derived: rebuilt from the crop if lost
    write_image(files["overlay"], overlay(fixed, aligned, task.overlay), durable=False)
    paths = {key: task.relative(path) for key, path in files.items()}
    paths["ir"] = task.crop_files["ir"]
    return AlignFiles(files=paths)


def overlay(thermal: np.ndarray, visible: np.ndarray, style: str = "checkerboard", tile: int = 64) -> np.ndarray:
    """For review: a checkerboard of the two images, or the visible edges drawn on the thermal."""
    thermal_bgr = cv2.cvtColor(thermal, cv2.COLOR_GRAY2BGR)
    if style == "edges":
        edges = cv2.Canny(cv2.cvtColor(visible, cv2.COLOR_BGR2GRAY), 60, 160)
        out = thermal_bgr.copy()
        out[edges > 0] = (0, 0, 255)
        return out
    out = visible.copy()
    cv2.copyTo(thermal_bgr, _checkerboard(*thermal.shape[:2], tile), out)
    return out


@lru_cache(maxsize=4)
def _checkerboard(height: int, width: int, tile: int) -> np.ndarray:
    """Where the overlay shows the thermal image (255), built once per frame size: np.indices and a
    three-channel np.where took most of the overlay's time."""
    rows = (np.arange(height) // tile) % 2
    columns = (np.arange(width) // tile) % 2
    return ((rows[:, None] ^ columns[None, :]) * 255).astype(np.uint8)


@lru_cache(maxsize=1)
def _shipped_refiner_version() -> str:
    from ums.align.learned.inference import SHIPPED_REFINER

    return hashlib.sha256(SHIPPED_REFINER.read_bytes()).hexdigest()[:16] if SHIPPED_REFINER.is_file() else "missing"


def _fingerprint(crop: dict[str, Any], config: AlignConfig) -> str:
    """What an estimate depends on: the crop and the registration settings (not the decision's)."""
    weights = config.weights
    # a retrained checkpoint at the same path must not reuse the old estimates
    version = weights.stat().st_mtime_ns if weights is not None and weights.exists() else None
    if config.method == "learned" and weights is None:
        version = _shipped_refiner_version()  # another ums release may ship other weights
    return settings_fingerprint(config, crop["fingerprint"], str(version), ECC_VERSION,
                                exclude={"score_threshold", "max_offset_deviation_px", "min_confident_frames", "flight_scale",
                                         "min_scale_sigmas", "overlay", "device"})


ALIGN = CaptureStage(STAGE, plan, estimate_frame, current=stored_estimate, record=record_estimate, then=plan_renders,
                     gpu=_uses_gpu, nothing_to_do="no cropped pair (run `ums crop` first)")
