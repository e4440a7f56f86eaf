"""Stage ``align``: register each cropped pair, with a per-flight rig offset as the fallback.

Pass 1 registers every cropped pair (classical ECC by default) and keeps the estimate and its
confidence. The rig is rigid, so the median translation of the confident frames of a flight is a
far better estimate of the static offset than any single frame (0.17 px against 1.4 px per frame
in registration.md §4.3). Pass 2 decides per frame: its own estimate when confident and close to
the flight offset, else the flight offset; a frame with neither is flagged for review, never
silently called aligned. Every decision is recorded.
"""

from __future__ import annotations

import hashlib
import io
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ums.align.ecc import RegistrationFailure
from ums.align.registration import register
from ums.align.flow import warp_with_flow
from ums.atomic import write_bytes, write_image
from ums.crop import STAGE as CROP_STAGE
from ums.progress import progress_bar
from ums.records import CaptureRecord, Issue
from ums.workspace import Workspace

STAGE = "align"


class AlignConfig(BaseModel):
    """Settings of ``ums align`` (``pipelines/align.yaml`` holds the defaults)."""

    model_config = ConfigDict(extra="forbid")

    method: str = Field("ecc", pattern="^(ecc|learned)$")
    weights: Path | None = Field(None, description="checkpoint of the learned method (ums align-train)")
    device: str = "cpu"
    # Euclidean by default: a rig roll of 0.3 deg leaves ~1.2 px with translation alone on synthetic
    # M30T flights, ~0.3 px with Euclidean; the scale comes from calibration (crop). Similarity
    # recovers a wrong scale (drone-like benchmark: 1.8 px median against 3.8) but drifts on
    # weakly textured frames (1.1 px on one synthetic frame): bench/RESULTS.md.
    motion: str = Field("euclidean", pattern="^(translation|euclidean|similarity)$")
    levels: int = Field(3, ge=1, le=5)
    score_threshold: float = Field(0.3, ge=0, le=1, description="ECC correlation on gradient maps")
    max_offset_deviation_px: float = Field(6.0, gt=0, description="a confident frame farther than "
                                           "this from the flight offset falls back to the offset")
    min_confident_frames: int = Field(3, ge=1, description="frames needed for a flight offset")
    overlay: str = Field("checkerboard", pattern="^(checkerboard|edges)$")
    show_progress: bool = True


@dataclass
class AlignReport:
    frame: int = 0
    flight_offset: int = 0
    unconfident: int = 0
    failed: int = 0
    reused: int = 0
    offsets: dict[str, list[list[float]] | None] = field(default_factory=dict)
    issues: list[Issue] = field(default_factory=list)

    def rows(self) -> list[tuple[str, object]]:
        rows = [
            ("aligned by their own estimate", self.frame),
            ("aligned by the flight offset", self.flight_offset),
            ("flagged: low confidence, no offset", self.unconfident),
            ("failed", self.failed),
            ("estimates reused", self.reused),
        ]
        for flight, offset in self.offsets.items():
            if offset is None:
                rows.append((f"flight offset {flight}", "none (too few confident frames)"))
                continue
            tx, ty, angle, scale = _similarity_parameters(offset)
            rows.append((f"flight offset {flight}",
                         f"({tx:+.2f}, {ty:+.2f}) px, {np.degrees(angle):+.3f} deg, scale {scale:.4f}"))
        return rows


def align_workspace(workspace: Workspace, config: AlignConfig | None = None) -> AlignReport:
    config = config or AlignConfig()
    if config.method == "learned":
        from ums.align.learned.inference import cached_matcher

        cached_matcher(config.weights, config.device)  # fail now, naming --weights, not once per frame
    run_id = workspace.start_run(STAGE, config.model_dump())
    report = AlignReport()
    cropped = _cropped_captures(workspace)
    estimates: dict[str, dict[str, Any]] = {}
    for capture, crop in progress_bar(cropped, "align", enabled=config.show_progress):
        previous = workspace.stage_results(capture.capture_id).get(STAGE)
        fingerprint = _fingerprint(crop, config)
        if previous and previous.get("fingerprint") == fingerprint and "estimate" in previous:
            estimates[capture.capture_id] = previous["estimate"]
            report.reused += 1
        else:
            estimates[capture.capture_id] = estimate_frame(workspace, capture, crop, config)
    offsets = flight_offsets(cropped, estimates, config)
    report.offsets = {flight: offsets.get(flight) for flight in {c.flight_root for c, _ in cropped}}
    for capture, crop in cropped:
        estimate = estimates[capture.capture_id]
        decision = decide(estimate, offsets.get(capture.flight_root), config)
        setattr(report, decision["decision"], getattr(report, decision["decision"]) + 1)
        result = {"fingerprint": _fingerprint(crop, config), "estimate": estimate, **decision}
        if decision["decision"] == "failed":
            report.issues.append(Issue(stage=STAGE, file=capture.frames["T"].path, capture_id=capture.capture_id,
                                       message=f"registration failed: {estimate['reason']}"))
            workspace.record_stage_result(capture.capture_id, STAGE, "failed", result)
            continue
        if decision["flagged"]:
            report.issues.append(Issue(stage=STAGE, file=capture.frames["T"].path, capture_id=capture.capture_id,
                                       level="warning", message=decision["reason"]))
        result["files"] = write_outputs(workspace, capture, crop, decision, config)
        workspace.record_stage_result(capture.capture_id, STAGE, "done", result)
    workspace.replace_issues(STAGE, "workspace", report.issues)
    workspace.finish_run(run_id, {k: str(v) for k, v in report.rows()})
    return report


def _cropped_captures(workspace: Workspace) -> list[tuple[CaptureRecord, dict[str, Any]]]:
    pairs = []
    for capture in workspace.captures():
        crop = workspace.stage_results(capture.capture_id).get(CROP_STAGE)
        if crop and crop["status"] == "done":
            pairs.append((capture, crop))
    return pairs


def _load(workspace: Workspace, crop: dict[str, Any], key: str, flags: int) -> np.ndarray:
    path = workspace.absolute(crop["files"][key])
    image = cv2.imread(str(path), flags)
    if image is None:
        raise RegistrationFailure(f"cannot read the cropped image {path}")
    return image


def estimate_frame(workspace: Workspace, capture: CaptureRecord, crop: dict[str, Any],
                   config: AlignConfig) -> dict[str, Any]:
    """One frame's own registration, as a JSON-ready record (or the reason it failed).

    Global models keep their 3x3 transform; dense (learned) flows go to ``align/<id>/flow.npy``."""
    try:
        fixed = _load(workspace, crop, "ir", cv2.IMREAD_GRAYSCALE)
        moving = _load(workspace, crop, "vis", cv2.IMREAD_COLOR)
        valid = _load(workspace, crop, "valid", cv2.IMREAD_GRAYSCALE)
        if config.method == "learned":
            registration = register(fixed, moving, "learned", weights=config.weights, device=config.device)
        else:
            registration = register(fixed, moving, config.method, motion=config.motion, levels=config.levels,
                                    moving_mask=valid)
    except RegistrationFailure as exc:
        return {"ok": False, "reason": str(exc)}
    estimate = {"ok": True, "score": registration.score, "converged": bool(registration.details.get("converged", True))}
    if registration.transform is not None:
        estimate["transform"] = registration.transform.tolist()
    else:
        path = workspace.stage_dir(STAGE) / capture.capture_id / "flow.npy"
        buffer = io.BytesIO()
        np.save(buffer, registration.flow.astype(np.float32))
        write_bytes(path, buffer.getvalue())
        estimate["flow"] = str(path.relative_to(workspace.root))
    return estimate


def flight_offsets(cropped, estimates, config: AlignConfig) -> dict[str, list[list[float]]]:
    """Per flight, the rig offset: the median (tx, ty, angle, scale) of its confident frames, as a
    3x3 transform (flights with fewer than ``min_confident_frames`` confident frames get none)."""
    by_flight: dict[str, list[tuple[float, float, float, float]]] = defaultdict(list)
    for capture, _ in cropped:
        estimate = estimates[capture.capture_id]
        if _confident(estimate, config) and "transform" in estimate:
            by_flight[capture.flight_root].append(_similarity_parameters(estimate["transform"]))
    offsets = {}
    for flight, values in by_flight.items():
        if len(values) >= config.min_confident_frames:
            tx, ty, angle, scale = np.median(np.array(values), axis=0)
            c, s = float(scale * np.cos(angle)), float(scale * np.sin(angle))
            offsets[flight] = [[c, -s, float(tx)], [s, c, float(ty)], [0.0, 0.0, 1.0]]
    return offsets


def _similarity_parameters(transform) -> tuple[float, float, float, float]:
    """(tx, ty, angle, scale) of a translation, Euclidean or similarity transform."""
    a, b = transform[0][0], transform[1][0]
    return transform[0][2], transform[1][2], float(np.arctan2(b, a)), float(np.hypot(a, b))


def _confident(estimate: dict[str, Any], config: AlignConfig) -> bool:
    return estimate["ok"] and estimate["converged"] and estimate["score"] >= config.score_threshold


def decide(estimate: dict[str, Any], offset: list[list[float]] | None, config: AlignConfig) -> dict[str, Any]:
    """Which transform (or dense flow) a frame gets, and why."""
    if not estimate["ok"]:
        if offset is None:
            return {"decision": "failed", "flagged": True, "reason": estimate["reason"]}
        return {"decision": "flight_offset", "flagged": False, "transform": offset,
                "reason": f"own registration failed ({estimate['reason']}); flight offset used"}
    own = {"transform": estimate["transform"]} if "transform" in estimate else {"flow": estimate["flow"]}
    confident = _confident(estimate, config)
    if confident and offset is not None and "transform" in estimate:
        transform = estimate["transform"]
        deviation = float(np.hypot(transform[0][2] - offset[0][2], transform[1][2] - offset[1][2]))
        if deviation > config.max_offset_deviation_px:
            return {"decision": "flight_offset", "flagged": False, "transform": offset,
                    "reason": f"own estimate {deviation:.1f} px from the flight offset; flight offset used"}
    if confident:
        return {"decision": "frame", "flagged": False, **own, "reason": f"confident (score {estimate['score']:.2f})"}
    if offset is not None:
        return {"decision": "flight_offset", "flagged": False, "transform": offset,
                "reason": f"low confidence (score {estimate['score']:.2f}); flight offset used"}
    return {"decision": "unconfident", "flagged": True, **own,
            "reason": f"low confidence (score {estimate['score']:.2f}) and no flight offset: review the overlay"}


def write_outputs(workspace: Workspace, capture: CaptureRecord, crop: dict[str, Any], decision: dict[str, Any],
                  config: AlignConfig) -> dict[str, str]:
    fixed = _load(workspace, crop, "ir", cv2.IMREAD_GRAYSCALE)
    moving = _load(workspace, crop, "vis", cv2.IMREAD_COLOR)
    height, width = fixed.shape
    if "flow" in decision:
        aligned = warp_with_flow(moving, np.load(workspace.absolute(decision["flow"])))
    else:
        transform = np.asarray(decision["transform"])
        aligned = cv2.warpAffine(moving, transform[:2], (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                 borderMode=cv2.BORDER_CONSTANT)
    folder = workspace.stage_dir(STAGE) / capture.capture_id
    files = {"vis": folder / "vis.png", "overlay": folder / "overlay.jpg"}
    write_image(files["vis"], aligned)
    write_image(files["overlay"], overlay(fixed, aligned, config.overlay))
    paths = {key: str(path.relative_to(workspace.root)) for key, path in files.items()}
    paths["ir"] = crop["files"]["ir"]
    return paths


def overlay(thermal: np.ndarray, visible: np.ndarray, style: str = "checkerboard", tile: int = 64) -> np.ndarray:
    """For review: a checkerboard of the two images, or the visible edges drawn on the thermal."""
    thermal_bgr = cv2.cvtColor(thermal, cv2.COLOR_GRAY2BGR)
    if style == "edges":
        edges = cv2.Canny(cv2.cvtColor(visible, cv2.COLOR_BGR2GRAY), 60, 160)
        out = thermal_bgr.copy()
        out[edges > 0] = (0, 0, 255)
        return out
    ys, xs = np.indices(thermal.shape[:2])
    board = ((ys // tile + xs // tile) % 2).astype(bool)
    return np.where(board[..., None], thermal_bgr, visible)


def _fingerprint(crop: dict[str, Any], config: AlignConfig) -> str:
    settings = config.model_dump_json(exclude={"show_progress", "score_threshold", "max_offset_deviation_px",
                                               "min_confident_frames", "overlay", "device"})
    weights = config.weights
    # a retrained checkpoint at the same path must not reuse the old estimates
    version = weights.stat().st_mtime_ns if weights is not None and weights.exists() else None
    return hashlib.sha256(f"{crop['fingerprint']}|{settings}|{version}".encode()).hexdigest()[:16]
