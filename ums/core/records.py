"""The workspace's records: one pydantic model per row kind, and the public manifest shape.

The manifest line (``ums manifest --json``) is :class:`CaptureManifest` serialised with
``model_dump(mode="json")``; its fields are a public interface documented in
``docs/manifest.md`` — add fields, never rename or remove them.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ums.core.stamps import FileStamp

IssueLevel = Literal["error", "warning", "info"]


class Issue(BaseModel):
    """Something a stage could not do, or did with a caveat, for one file or capture."""

    model_config = ConfigDict(frozen=True)

    stage: str
    file: str | None = None
    message: str
    level: IssueLevel = "error"
    capture_id: str | None = None

    def describe(self) -> str:
        where = f"{self.file}: " if self.file else ""
        return f"[{self.stage}] {where}{self.message}"


class ExifSummary(BaseModel):
    make: str | None = None
    model: str | None = None
    datetime: str | None = None
    focal_length_mm: float | None = None
    focal_length_35mm: float | None = None
    f_number: float | None = None
    gps_latitude: float | None = None
    gps_longitude: float | None = None
    gps_altitude_m: float | None = None
    image_description: str | None = None
    software: str | None = None
    serial_number: str | None = None
    width: int | None = None
    height: int | None = None


class XmpField(BaseModel):
    raw: str
    value: Any


class FileProbe(BaseModel):
    """What ingest learned from one source file without decoding its pixels."""

    path: str
    size: int
    mtime_ns: int
    sha256: str
    camera: str
    standard_name: bool = True
    sequence: int
    name_timestamp: str | None = None
    width: int
    height: int
    jpeg_truncated: bool = False
    exif: ExifSummary = Field(default_factory=ExifSummary)
    xmp: dict[str, XmpField] = Field(default_factory=dict)
    thermal_raw: ThermalRawRecord | None = None
    issues: list[Issue] = Field(default_factory=list)

    @property
    def timestamp(self) -> str | None:
        """Capture time: the file name's, else EXIF DateTimeOriginal."""
        return self.name_timestamp or self.exif.datetime


class ThermalRawRecord(BaseModel):
    path: str  # relative to the workspace root
    shape: tuple[int, int]
    dtype: str = "uint16"
    min: int
    max: int
    source_marker: str
    palette: str | None = None


class FrameRecord(BaseModel):
    path: str
    sha256: str
    width: int
    height: int
    camera_letter: str
    size: int
    jpeg_truncated: bool = False
    exif: ExifSummary
    xmp: dict[str, XmpField]

    @classmethod
    def from_probe(cls, probe: FileProbe) -> FrameRecord:
        return cls(
            path=probe.path,
            sha256=probe.sha256,
            width=probe.width,
            height=probe.height,
            camera_letter=probe.camera,
            size=probe.size,
            jpeg_truncated=probe.jpeg_truncated,
            exif=probe.exif,
            xmp=probe.xmp,
        )


class CaptureRecord(BaseModel):
    """One capture: the frames that several cameras took at one trigger."""

    capture_id: str
    flight_root: str
    folder: str  # relative to flight_root
    sequence: int
    timestamp: str | None
    frames: dict[str, FrameRecord]
    thermal_raw: ThermalRawRecord | None = None

    @property
    def reference_frame(self) -> FrameRecord:
        """The thermal frame when there is one (its metadata describes the IR channel), else the
        first visible frame."""
        for key in ("T", "W", "Z", "V", "S"):
            if key in self.frames:
                return self.frames[key]
        return next(iter(self.frames.values()))


class CaptureManifest(BaseModel):
    """One line of ``ums manifest --json``."""

    capture_id: str
    sequence: int
    timestamp: str | None
    folder: str
    flight_root: str
    frames: dict[str, FrameRecord]
    exif: ExifSummary
    xmp: dict[str, XmpField]
    thermal_raw: ThermalRawRecord | None
    stages: dict[str, Any] = Field(default_factory=dict)
    labels: list[dict[str, Any]] = Field(default_factory=list)
    issues: list[Issue]


class LabelRecord(BaseModel):
    """One object label of a capture, on the aligned thermal grid (pixels)."""

    id: int | None = None
    taxonomy: str = "ums"
    class_id: int
    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    score: float | None = None
    mask: dict[str, Any] | None = None  # COCO RLE
    source: Literal["auto", "human"] = "auto"
    reviewed: bool = False
    model: str | None = None
    provenance: dict[str, float] = Field(default_factory=dict)  # score per modality that saw it
    tags: list[str] = Field(default_factory=list)
    prompt: str | None = None  # what an open-vocabulary detector was asked to find for this class
    updated_at: str | None = None  # set by the workspace

    @property
    def excluded(self) -> bool:
        """Rejected or deleted in review: kept as a record, left out of exports and splits."""
        return "reject" in self.tags or "deleted" in self.tags

    @property
    def protected(self) -> bool:
        """A human's label, or one a human reviewed: no automatic run may replace it."""
        return self.source == "human" or self.reviewed

    @classmethod
    def from_row(cls, row) -> LabelRecord:
        return cls(
            id=row["id"], taxonomy=row["taxonomy"], class_id=row["class_id"], box=json.loads(row["box_json"]),
            score=row["score"], mask=json.loads(row["mask_json"]) if row["mask_json"] else None,
            source=row["source"], reviewed=bool(row["reviewed"]), model=row["model"],
            provenance=json.loads(row["provenance_json"] or "{}"), tags=json.loads(row["tags_json"]),
            prompt=row["prompt"], updated_at=row["updated_at"],
        )

    def row_values(self, capture_id: str, now: str) -> tuple:
        return (capture_id, self.taxonomy, self.class_id, json.dumps(list(self.box)), self.score,
                json.dumps(self.mask) if self.mask else None, self.source, int(self.reviewed), self.model,
                json.dumps(self.provenance), json.dumps(self.tags), self.prompt, now, now)


# -- stage results: what a stage stores per capture (``stages.<name>`` in the manifest) ------------
class StageResult(BaseModel):
    """Base of a stage's per-capture result. ``status`` and ``issues`` travel with it from the
    worker to the driver but are stored apart (the status column, the issues table)."""

    status: Literal["done", "failed"] = Field("done", exclude=True)
    issues: list[Issue] = Field(default_factory=list, exclude=True)
    # stamps of the files the result names (set by the runner in the worker): a rerun redoes a
    # capture whose outputs were truncated or altered since
    outputs: dict[str, FileStamp] | None = None

    def stored(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class CropResult(StageResult):
    files: dict[str, str]  # vis, ir, valid (+ ir16 with raw thermal), relative to the workspace
    profile: str | None = None  # the camera profile the intrinsics came from (None: stored before it was kept)
    visible_camera: str
    output_size: tuple[int, int]
    thermal_to_visible: list[list[float]]
    output_to_thermal: list[list[float]]
    distance_m: float | None = None
    distance_source: str
    intrinsics_source: dict[str, str]
    decode_reduction: int
    visible_coverage: float
    thermal_source: Literal["raw", "palette preview"]


class AlignEstimate(StageResult):
    """One frame's own registration, before the flight's offset is known."""

    ok: bool
    score: float | None = None
    converged: bool = True
    transform: list[list[float]] | None = None  # global models
    flow: str | None = None  # dense (learned) flows: align/<id>/flow.npy
    reason: str | None = None  # why it failed
    refinement: str | None = None  # the learned cascade: what its refiner did, or why ECC's fit was kept


class AlignDecision(BaseModel):
    """Which transform (or flow) a frame gets, and why."""

    decision: Literal["frame", "flight_offset", "unconfident", "failed"]
    flagged: bool
    reason: str
    transform: list[list[float]] | None = None
    flow: str | None = None


class AlignFiles(StageResult):
    files: dict[str, str]  # vis (aligned), overlay, ir


class AutolabelResult(StageResult):
    model: str
    detections: dict[str, int]  # per modality, after mapping to the UMS taxonomy
    # per modality, each detection as [x0, y0, x1, y1, score, UMS class id]: what the review queue
    # weighs the merged labels against (a class the modalities disagree on, a detection no label kept)
    per_modality: dict[str, list[list[float]]] = Field(default_factory=dict)
    merged: int
    written: int = 0  # set by the driver: labels actually added
    masks: bool
    files: dict[str, str]
    labels: list[LabelRecord] = Field(default_factory=list, exclude=True)  # to store, not in the result
    # how the visible detector saw the pair: "native" (the source frame's own pixels over the grid)
    # or "aligned" (the 640x512 resampling); None in results stored before the choice existed
    visible_resolution: Literal["native", "aligned"] | None = None
    visible_region: list[int] | None = None  # native: x0, y0, x1, y1 of the (undistorted) visible frame
    # per modality: "sliced" or "full", detector passes over slices (0: full image only), metres per
    # pixel of the image the detector got (absent: range unknown), and the smallest object of interest
    # (slicing.min_object_m) in detector-input pixels of a full-image pass: what ``slice: auto`` weighed
    slicing: dict[str, str] = Field(default_factory=dict)
    slices: dict[str, int] = Field(default_factory=dict)
    gsd_m: dict[str, float] = Field(default_factory=dict)
    object_px: dict[str, float] = Field(default_factory=dict)
    # per sliced modality: where the slices were ("grid" or "warm-spots") and how much each was enlarged
    slice_windows: dict[str, str] = Field(default_factory=dict)
    zoom: dict[str, float] = Field(default_factory=dict)


FileProbe.model_rebuild()
