"""Stage ``crop``: the visible frame resampled once onto the thermal grid, from the cameras' geometry.

For each capture with a thermal and a visible frame, the thermal->visible homography is built from
the intrinsics (the frames' XMP calibration where plausible, else the camera profile), the rig in
the profile and the parallax of the baseline at the capture's range (LRF, else altitude and
gimbal pitch). The common field of view is computed, not assumed: with the wide camera the thermal
view lies inside the visible frame and the whole thermal grid is kept; with a narrower visible
camera (zoom) the thermal frame is cut to the visible footprint. Distortion from DewarpData is
removed in the same resampling, and the JPEG is decoded at the smallest DCT-scaled size
(1/2, 1/4, 1/8) that still covers the output resolution.

Outputs per capture in ``crop/<capture_id>/``: ``vis.tif`` (BGR, uncompressed: align reads it and
writes the dataset's visible image), ``ir.png`` (8-bit stretch of the raw counts), ``valid.png``
(where the visible frame has data) and ``ir16.png`` (raw counts on the output grid). When the output
grid is the thermal grid itself (a wide camera), the result's ``ir16`` names ingest's raw-counts
PNG in ``thermal_raw/`` instead of a copy of it.
"""

from __future__ import annotations

from typing import Literal

import math
import mmap
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ums.core.atomic import RUNS_PNG, UNCOMPRESSED_TIFF, read_image, write_image
from ums.camera import (
    CameraModel,
    CameraProfile,
    apply_homography,
    frame_size_problem,
    pixel_scale_matrix,
    plane_homography,
    rotation_matrix,
)
from ums.dji.jpeg import JpegError, read_declared_size
from ums.dji.rjpeg import stretch_to_uint8
from ums.dji.xmp import PLAUSIBLE_RANGES, is_number, parse_number
from ums.core.records import CaptureRecord, CropResult, FrameRecord, Issue, XmpField
from ums.core.executors import ExecutorSettings
from ums.core.runner import CaptureStage, StageReport, Task, run_capture_stage, settings_fingerprint
from ums.core.stage_names import CROP as STAGE
from ums.core.workspace import Workspace

# OpenCV's decode flags by DCT reduction, on the sensor's own pixel grid, which the intrinsics
# describe: an EXIF Orientation applied by OpenCV would rotate the pixels away from them. Not
# parsing it also saves ~12 ms of a 55 ms 1/4 decode.
DECODE_FLAGS = {reduction: flag | cv2.IMREAD_IGNORE_ORIENTATION for reduction, flag in
                ((1, cv2.IMREAD_COLOR), (2, cv2.IMREAD_REDUCED_COLOR_2), (4, cv2.IMREAD_REDUCED_COLOR_4),
                 (8, cv2.IMREAD_REDUCED_COLOR_8))}
# An XMP focal length this far from the profile's is read as another unit (the thermal cameras of
# some models write 9100.0 for 9.1 mm) and ignored.
_FOCAL_TOLERANCE = 0.3
MIN_VISIBLE_SIDE = 16
MIN_VISIBLE_COVERAGE = 0.05
LRF_SOURCE = "LRFTargetDistance"
ALTITUDE_SOURCE = "RelativeAltitude / cos(gimbal)"
NO_RANGE = "unknown (no parallax correction)"


class CropConfig(BaseModel):
    """Settings of ``ums crop`` (``pipelines/crop.yaml`` holds the defaults)."""

    model_config = ConfigDict(extra="forbid")

    profile: str = "m30t"
    output_width: int = Field(640, gt=0)
    output_height: int = Field(512, gt=0)
    visible_camera: Literal["W", "Z", "V"] = Field("W", description="which visible frame to use")
    use_xmp_calibration: bool = True
    parallax: bool = True
    max_decode_reduction: int = Field(8, description="1, 2, 4 or 8")
    max_visible_pixels: int = Field(100_000_000, gt=0, description="larger JPEG headers are refused before decoding")


@dataclass(frozen=True)
class CropGeometry:
    """How the output grid relates to both source images."""

    thermal_to_visible: np.ndarray  # thermal (raw grid) pixel -> visible frame pixel
    output_to_thermal: np.ndarray  # output pixel -> thermal (raw grid) pixel
    distance_m: float
    distance_source: str
    intrinsics_source: dict[str, str]
    distance_caveats: tuple[str, ...] = ()  # why a better range than the one used was not usable

    @property
    def output_to_visible(self) -> np.ndarray:
        return self.thermal_to_visible @ self.output_to_thermal


@dataclass
class CropReport(StageReport):
    row_names = ("cropped now", "already cropped", "failed")


# -- geometry --------------------------------------------------------------------------------------
def frame_intrinsics(frame: FrameRecord, model: CameraModel, width: int, height: int, use_xmp: bool):
    """K and distortion for a frame resampled to ``width`` x ``height``; and where they came from."""
    K = model.intrinsics(width, height)
    distortion = np.zeros(5)
    source = "profile"
    if not use_xmp:
        return K, distortion, source
    frame_to_grid = pixel_scale_matrix(width / frame.width, height / frame.height)
    xmp = {name: field.value for name, field in frame.xmp.items()}
    dewarp = xmp.get("DewarpData")
    focal = xmp.get("CalibratedFocalLength")
    if isinstance(dewarp, dict) and _plausible_focal(dewarp["fx"], model, frame.width):
        centre_x = (frame.width - 1) / 2 + dewarp["cx"]
        centre_y = (frame.height - 1) / 2 + dewarp["cy"]
        K = frame_to_grid @ np.array([[dewarp["fx"], 0, centre_x], [0, dewarp["fy"], centre_y], [0, 0, 1.0]])
        distortion = np.array([dewarp[k] for k in ("k1", "k2", "p1", "p2", "k3")], float)
        source = "xmp DewarpData"
    elif isinstance(focal, (int, float)) and _plausible_focal(focal, model, frame.width):
        cx, cy = xmp.get("CalibratedOpticalCenterX"), xmp.get("CalibratedOpticalCenterY")
        if not (isinstance(cx, (int, float)) and 0 < cx < frame.width and isinstance(cy, (int, float))
                and 0 < cy < frame.height):
            cx, cy = (frame.width - 1) / 2, (frame.height - 1) / 2
        K = frame_to_grid @ np.array([[focal, 0, cx], [0, focal, cy], [0, 0, 1.0]])
        source = "xmp CalibratedFocalLength"
    return K, distortion, source


def _plausible_focal(focal_px: float, model: CameraModel, frame_width: int) -> bool:
    expected = model.focal_px * frame_width / model.width
    return focal_px > 0 and abs(focal_px / expected - 1) < _FOCAL_TOLERANCE


def capture_distance(frame: FrameRecord) -> tuple[float, str]:
    """Range to the scene and where it came from, with why a better source was not usable."""
    distance, source, caveats = capture_range(frame)
    return distance, describe_range(source, caveats)


def capture_range(frame: FrameRecord) -> tuple[float, str, list[str]]:
    """Range to the scene: the laser range finder, else altitude over the gimbal's off-nadir angle;
    its source; and why each better source that the frame has was not usable (a missing field is
    no caveat: many drones have no range finder)."""
    lrf, lrf_caveat = _xmp_value(frame.xmp, "LRFTargetDistance", "LRF distance", positive=True)
    status = frame.xmp.get("LRFStatus")
    if lrf is not None and status is not None and status.value != "Normal":
        lrf, lrf_caveat = None, f"LRF status {status.raw!r}"
    if lrf is not None:
        return lrf, LRF_SOURCE, []
    caveats = [lrf_caveat] if lrf_caveat else []
    altitude, altitude_caveat = _xmp_value(frame.xmp, "RelativeAltitude", "RelativeAltitude", positive=True)
    pitch, pitch_caveat = _xmp_value(frame.xmp, "GimbalPitchDegree", "GimbalPitchDegree")
    if altitude is not None and pitch is not None:
        off_nadir = math.radians(90.0 + pitch)  # pitch -90: straight down
        return altitude / max(math.cos(off_nadir), 0.1), ALTITUDE_SOURCE, caveats
    return math.inf, NO_RANGE, caveats + [c for c in (altitude_caveat, pitch_caveat) if c]


def describe_range(source: str, caveats: list[str]) -> str:
    if not caveats:
        return source
    if source == NO_RANGE:
        return f"{NO_RANGE[:-1]}: {'; '.join(caveats)})"
    return f"{source} ({'; '.join(caveats)})"


def _xmp_value(xmp: dict[str, XmpField], name: str, label: str, positive: bool = False) -> tuple[float | None, str | None]:
    """A field's number when it is plausible (ingest keeps an implausible one as text), else why not."""
    field = xmp.get(name)
    if field is None:
        return None, None
    value = field.value if is_number(field.value) else parse_number(field.raw)
    if value is None:
        return None, f"{label} {field.raw.strip()!r} is not a number"
    low, high, unit = PLAUSIBLE_RANGES[name]
    if not low <= value <= high or (positive and value <= 0):
        return None, f"{label} {value:g}{unit} is not plausible"
    return float(value), None


def range_issue(frame: FrameRecord, geometry: CropGeometry) -> Issue | None:
    """What the range's fallback costs, when a better source was there but not usable."""
    if not geometry.distance_caveats:
        return None
    caveats = "; ".join(geometry.distance_caveats)
    if math.isinf(geometry.distance_m):
        return Issue(stage=STAGE, file=frame.path, message=f"no parallax correction: {caveats}", level="warning")
    return Issue(stage=STAGE, file=frame.path, message=f"parallax from {geometry.distance_source}", level="info")


def crop_geometry(capture: CaptureRecord, profile: CameraProfile, config: CropConfig,
                  thermal_shape: tuple[int, int]) -> CropGeometry:
    thermal_frame, visible_frame = capture.frames["T"], capture.frames[config.visible_camera]
    height, width = thermal_shape
    thermal_model = profile.cameras["T"]
    visible_model = profile.cameras[config.visible_camera]
    K_t, _, thermal_source = frame_intrinsics(thermal_frame, thermal_model, width, height, config.use_xmp_calibration)
    K_v, _, visible_source = frame_intrinsics(visible_frame, visible_model, visible_frame.width,
                                              visible_frame.height, config.use_xmp_calibration)
    distance, distance_source, caveats = capture_range(visible_frame) if config.parallax else (math.inf, "disabled", [])
    rotation = rotation_matrix(profile.rig.thermal_rotation_deg)
    thermal_to_visible = plane_homography(K_t, K_v, rotation, np.array(profile.rig.thermal_offset_m), distance)
    region = common_region(thermal_to_visible, (width, height), (visible_frame.width, visible_frame.height),
                           config.output_width / config.output_height)
    x0, y0, x1, y1 = region
    # output pixel centres spread evenly over the region's extent (pixel-centre convention)
    sx, sy = (x1 - x0) / config.output_width, (y1 - y0) / config.output_height
    output_to_thermal = np.array([[sx, 0, x0 + 0.5 * sx - 0.5], [0, sy, y0 + 0.5 * sy - 0.5], [0, 0, 1.0]])
    return CropGeometry(thermal_to_visible, output_to_thermal, distance, describe_range(distance_source, caveats),
                        {"thermal": thermal_source, "visible": visible_source}, tuple(caveats))


def common_region(thermal_to_visible: np.ndarray, thermal_size: tuple[int, int],
                  visible_size: tuple[int, int], aspect: float) -> tuple[float, float, float, float]:
    """The part of the thermal frame (edges, not centres: 0..W) that the visible frame also sees,
    shrunk about its centre to the output aspect ratio."""
    tw, th = thermal_size
    vw, vh = visible_size
    corners = np.array([[-0.5, -0.5], [vw - 0.5, -0.5], [vw - 0.5, vh - 0.5], [-0.5, vh - 0.5]])
    footprint = apply_homography(np.linalg.inv(thermal_to_visible), corners) + 0.5
    x0 = max(0.0, footprint[0, 0], footprint[3, 0])
    x1 = min(float(tw), footprint[1, 0], footprint[2, 0])
    y0 = max(0.0, footprint[0, 1], footprint[1, 1])
    y1 = min(float(th), footprint[2, 1], footprint[3, 1])
    if x1 - x0 < 8 or y1 - y0 < 8:
        raise ValueError("the visible and thermal views do not overlap")
    if (x1 - x0) / (y1 - y0) > aspect:
        half = (y1 - y0) * aspect / 2
        centre = (x0 + x1) / 2
        x0, x1 = centre - half, centre + half
    else:
        half = (x1 - x0) / aspect / 2
        centre = (y0 + y1) / 2
        y0, y1 = centre - half, centre + half
    return x0, y0, x1, y1


def decode_reduction(output_to_visible: np.ndarray, output_size: tuple[int, int], limit: int) -> int:
    """The largest JPEG DCT reduction that keeps at least one decoded pixel per output pixel."""
    w, h = output_size
    centre = np.array([[w / 2, h / 2], [w / 2 + 1, h / 2], [w / 2, h / 2 + 1]])
    mapped = apply_homography(output_to_visible, centre)
    pixels_per_output = min(np.linalg.norm(mapped[1] - mapped[0]), np.linalg.norm(mapped[2] - mapped[0]))
    reduction = 1
    for candidate in (2, 4, 8):
        if candidate <= limit and pixels_per_output / candidate >= 0.95:
            reduction = candidate
    return reduction


def resample_visible(visible: FrameRecord, geometry: CropGeometry, K_v: np.ndarray, distortion: np.ndarray,
                     output_size: tuple[int, int], limit: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Decode (reduced) and resample the visible frame onto the output grid in one remap.

    Returns the image, its validity mask (255 where the visible frame has data) and the reduction."""
    reduction = decode_reduction(geometry.output_to_visible, output_size, limit)
    image = decode_frame(visible, DECODE_FLAGS[reduction], reduction)
    map_x, map_y = _visible_maps(geometry.output_to_visible, K_v, distortion, reduction, output_size)
    resampled = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    inside = (map_x >= -0.5) & (map_x <= image.shape[1] - 0.5) & (map_y >= -0.5) & (map_y <= image.shape[0] - 0.5)
    return resampled, inside.astype(np.uint8) * 255, reduction


def decode_frame(frame: FrameRecord, flags: int, reduction: int = 1) -> np.ndarray:
    """Decode a source frame at 1/``reduction``, refusing a file whose header no longer declares the
    size ingest recorded (read before decoding: a header rewritten to 60000x60000 would be decoded
    into gigabytes, or fail inside OpenCV) and a decode of another size than the header declares."""
    path = Path(frame.path)
    try:
        with open(path, "rb") as file:
            width, height = read_declared_size(file)
    except JpegError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    if (width, height) != (frame.width, frame.height):
        raise ValueError(f"{path}: its JPEG header now declares {width}x{height} pixels where ingest recorded "
                         f"{frame.width}x{frame.height}; the file changed since ingest: rerun `ums ingest`")
    image = decode_mapped(path, flags)
    if image is None:
        raise ValueError(f"OpenCV could not decode {path}")
    expected = (-(-frame.height // reduction), -(-frame.width // reduction))  # libjpeg rounds the scaled size up
    if image.shape[:2] != expected:
        raise ValueError(f"{path}: decoding it at 1/{reduction} gave {image.shape[1]}x{image.shape[0]} pixels where "
                         f"its header declares {frame.width}x{frame.height} ({expected[1]}x{expected[0]} at "
                         f"1/{reduction}); refused")
    return image


def decode_mapped(path: Path, flags: int) -> np.ndarray | None:
    """cv2.imdecode of the file's pages mapped in place (None when OpenCV cannot decode it).

    cv2.imread feeds libjpeg through stdio in 4 KB reads, and reading the file into bytes first
    copies it: on a 3 MB frame here they cost ~3.5 and ~1 ms more than a mapping populated up front
    (bench/RESULTS.md)."""
    with open(path, "rb") as file:
        if os.fstat(file.fileno()).st_size == 0:
            return None
        with _read_only_map(file) as mapped:
            encoded = np.frombuffer(mapped, np.uint8)
            try:
                return cv2.imdecode(encoded, flags)
            finally:
                del encoded  # the mapping cannot close while an array still views it


def _read_only_map(file) -> mmap.mmap:
    if hasattr(mmap, "MAP_POPULATE"):  # Linux: fault every page in at once, not one by one while decoding
        return mmap.mmap(file.fileno(), 0, flags=mmap.MAP_PRIVATE | mmap.MAP_POPULATE, prot=mmap.PROT_READ)
    return mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)


def _visible_maps(output_to_visible: np.ndarray, K_v: np.ndarray, distortion: np.ndarray, reduction: int,
                  output_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Output pixel -> pixel of the reduced decode (float32 maps for cv2.remap), the homography and the
    lens distortion (:func:`_distort`'s model) in one pass.

    cv2.initUndistortRectifyMap does that arithmetic in double precision at ~1.5 ms for 640x512, where
    numpy float64 took ~50 ms (a 3x3 product per pixel) and ~10 ms even written as outer sums. Its
    "rectification" R is the inverse of output pixel -> normalised ideal ray, with the identity as the
    new camera; the lens camera is K_v rescaled to the reduced decode. Rows are independent and the
    maps are freshly allocated, so the result depends neither on threads nor on memory alignment."""
    ray_from_output = np.linalg.inv(K_v) @ output_to_visible
    decoded_K = pixel_scale_matrix(1.0 / reduction) @ K_v
    map_x, map_y = cv2.initUndistortRectifyMap(decoded_K, np.asarray(distortion, np.float64), np.linalg.inv(ray_from_output),
                                               np.eye(3), output_size, cv2.CV_32FC1)
    return map_x, map_y


def _distort(points: np.ndarray, K: np.ndarray, distortion: np.ndarray) -> np.ndarray:
    """Ideal (undistorted) pixel -> the pixel the lens actually imaged it at (Brown-Conrady)."""
    k1, k2, p1, p2, k3 = distortion
    x = (points[:, 0] - K[0, 2]) / K[0, 0]
    y = (points[:, 1] - K[1, 2]) / K[1, 1]
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2 * r2 + k3 * r2 * r2 * r2
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return np.stack([xd * K[0, 0] + K[0, 2], yd * K[1, 1] + K[1, 2]], 1)


# -- the stage -------------------------------------------------------------------------------------
class CropTask(Task):
    capture: CaptureRecord
    config: CropConfig


def plan(workspace: Workspace, config: CropConfig) -> list[CropTask]:
    """Every capture with a thermal frame and the configured visible frame."""
    return [
        CropTask(key=capture.capture_id, capture_id=capture.capture_id, workspace_root=workspace.root,
                 fingerprint=_fingerprint(capture, config), file=capture.frames["T"].path, capture=capture,
                 config=config)
        for capture in workspace.captures()
        if "T" in capture.frames and config.visible_camera in capture.frames
    ]


def process(task: CropTask) -> CropResult:
    """Resample one capture's visible frame (and its thermal) onto the output grid; write the PNGs."""
    capture, config = task.capture, task.config
    profile = _profile(config.profile)
    visible_frame = capture.frames[config.visible_camera]
    _check_size(visible_frame, config)
    _check_declared_size(capture.frames["T"], "T")
    thermal, thermal_raw = _thermal_image(task.workspace_root, capture)
    geometry = crop_geometry(capture, profile, config, thermal.shape[:2])
    output_size = (config.output_width, config.output_height)
    K_v, distortion, _ = frame_intrinsics(visible_frame, profile.cameras[config.visible_camera],
                                          visible_frame.width, visible_frame.height, config.use_xmp_calibration)
    visible, valid, reduction = resample_visible(visible_frame, geometry, K_v, distortion,
                                                 output_size, config.max_decode_reduction)
    emptiness = _empty_crop_reason(visible, valid)
    if emptiness:
        raise ValueError(f"{visible_frame.path}: {emptiness}; the pair is not usable")
    folder = task.output_dir(STAGE)
    files = {"vis": folder / "vis.tif", "ir": folder / "ir.png", "valid": folder / "valid.png"}
    ir_out = _resample_thermal(thermal, geometry.output_to_thermal, output_size)
    # derived files: rebuilt from the sources if a power cut ever loses them, so no fsync
    if thermal_raw:
        if ir_out is thermal:  # on the thermal grid itself ingest's PNG holds these very counts: no copy
            files["ir16"] = task.workspace_root / capture.thermal_raw.path
            (folder / "ir16.png").unlink(missing_ok=True)  # an earlier run's, on another output grid
        else:
            files["ir16"] = folder / "ir16.png"
            write_image(files["ir16"], ir_out, durable=False)
        ir_out = stretch_to_uint8(ir_out)
    write_image(files["ir"], ir_out, durable=False)
    # align reads vis.tif once and writes the dataset's visible image: compressing this intermediate
    # would cost 2-16 of crop's ~70 ms per frame (bench/RESULTS.md)
    write_image(files["vis"], visible, UNCOMPRESSED_TIFF, durable=False)
    write_image(files["valid"], valid, RUNS_PNG, durable=False)
    return CropResult(
        files={key: task.relative(path) for key, path in files.items()},
        profile=config.profile,
        visible_camera=config.visible_camera,
        output_size=output_size,
        thermal_to_visible=geometry.thermal_to_visible.tolist(),
        output_to_thermal=geometry.output_to_thermal.tolist(),
        distance_m=None if math.isinf(geometry.distance_m) else geometry.distance_m,
        distance_source=geometry.distance_source,
        intrinsics_source=geometry.intrinsics_source,
        decode_reduction=reduction,
        visible_coverage=_coverage(valid),
        thermal_source="raw" if thermal_raw else "palette preview",
        issues=[issue for issue in [range_issue(visible_frame, geometry)] if issue],
    )


CROP = CaptureStage(STAGE, plan, process)


def crop_workspace(workspace: Workspace, config: CropConfig | None = None,
                   executor: ExecutorSettings | None = None) -> CropReport:
    """Crop every visible/thermal pair of the workspace that is not cropped yet (or changed)."""
    return run_capture_stage(workspace, CROP, config or CropConfig(), CropReport(), executor)


@lru_cache(maxsize=8)
def _profile(name: str) -> CameraProfile:
    return CameraProfile.load(name)


def _check_size(frame: FrameRecord, config: CropConfig) -> None:
    """Refuse a header whose size no camera has before decoding it (a 60000x60000 claim would be
    decoded into gigabytes), and one too small to cover the output."""
    pixels = frame.width * frame.height
    if pixels > config.max_visible_pixels:
        raise ValueError(f"{frame.path}: the JPEG header claims {frame.width}x{frame.height} pixels, more than "
                         f"max_visible_pixels ({config.max_visible_pixels:,}); refused before decoding")
    _check_declared_size(frame, config.visible_camera)
    if frame.width < MIN_VISIBLE_SIDE or frame.height < MIN_VISIBLE_SIDE:
        raise ValueError(f"{frame.path}: a {frame.width}x{frame.height} visible frame is too small to crop")


def _check_declared_size(frame: FrameRecord, camera: str) -> None:
    """Ingest refuses these sizes; a workspace ingested by an older version may still hold one."""
    problem = frame_size_problem(camera, frame.width, frame.height, frame.exif.model)
    if problem:
        raise ValueError(f"{frame.path}: {problem}")


def _empty_crop_reason(visible: np.ndarray, valid: np.ndarray) -> str | None:
    """Why a resampled visible image carries no picture (None when it does)."""
    coverage = _coverage(valid)
    if coverage < MIN_VISIBLE_COVERAGE:
        return f"the visible frame covers only {coverage:.1%} of the thermal view"
    if _pooled_std(visible, valid) < 0.5:
        return "the visible crop is one constant colour (an empty or undecodable frame)"
    return None


def _coverage(valid: np.ndarray) -> float:
    """The share of the output the visible frame covers (0.05 ms: cheaper to count twice than to pass)."""
    return cv2.countNonZero(valid) / valid.size


def _pooled_std(image: np.ndarray, mask: np.ndarray) -> float:
    """The standard deviation of every channel value under ``mask`` together (a grey constant is
    empty, a coloured one is not), from OpenCV's per-channel sums: boolean indexing copied the
    pixels and took ~15 ms per frame."""
    means, stds = (values.ravel() for values in cv2.meanStdDev(image, mask=mask))
    variance = float(np.mean(stds * stds + means * means) - np.mean(means) ** 2)
    return math.sqrt(max(variance, 0.0))


def _thermal_image(workspace_root: Path, capture: CaptureRecord) -> tuple[np.ndarray, bool]:
    """Raw counts (uint16) from ingest's PNG and True, when it wrote one; else the palette preview in
    grey and False."""
    if capture.thermal_raw is not None:
        # None when gone since ingest: the preview still gives a usable (8-bit) thermal image
        counts = read_image(workspace_root / capture.thermal_raw.path, cv2.IMREAD_UNCHANGED)
        if counts is not None and counts.shape != tuple(capture.thermal_raw.shape):
            raise ValueError(f"{capture.thermal_raw.path} holds {counts.shape[1]}x{counts.shape[0]} counts where ingest "
                             f"recorded {capture.thermal_raw.shape[1]}x{capture.thermal_raw.shape[0]}: rerun `ums ingest`")
        if counts is not None:
            return counts, True
    # on the sensor's own pixel grid, as the raw counts and the visible decode are
    return decode_frame(capture.frames["T"], cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION), False


def _resample_thermal(thermal: np.ndarray, output_to_thermal: np.ndarray, output_size: tuple[int, int]) -> np.ndarray:
    w, h = output_size
    if np.allclose(output_to_thermal, np.eye(3)) and thermal.shape[:2] == (h, w):
        return thermal
    shrinking = output_to_thermal[0, 0] > 1.2
    if shrinking:  # area averaging, as a DCT-reduced decode would, instead of aliasing
        thermal = cv2.GaussianBlur(thermal, (0, 0), 0.5 * output_to_thermal[0, 0])
    return cv2.warpAffine(thermal, output_to_thermal[:2], (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def _fingerprint(capture: CaptureRecord, config: CropConfig) -> str:
    frames = "|".join(f"{k}:{f.sha256}" for k, f in sorted(capture.frames.items()))
    return settings_fingerprint(config, frames)
