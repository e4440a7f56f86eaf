"""``ums synth-flight``: an M30T SD card stand-in with exact ground truth.

No public source has a real DJI visible frame, so later stages are tested and benchmarked on this:
W frames (4000x3000 JPEG, DJI EXIF + drone-dji XMP) and T frames (640x512 R-JPEG-like: EXIF, XMP
and a raw uint16 block in APP3) named and foldered like an SD card, the thermal view placed in the
wide frame by the camera profile's geometry plus a known rig offset and parallax. The sidecar
``groundtruth.json`` holds, per capture, the exact thermal->wide homography and, for procedural
scenes, every object's polygon and box in both frames.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ums.core.atomic import write_bytes, write_text
from ums.camera import (
    CameraModel,
    CameraProfile,
    apply_homography,
    pixel_scale_matrix,
    plane_homography,
    rotation_matrix,
)
from ums.dji.rjpeg import stretch_to_uint8
from ums.dji.writer import build_exif, encode_dji_jpeg
from ums.core.progress import progress_bar
from ums.synth.scene import TEMPERATURE_SCALE, render_scene

GROUND_TRUTH_NAME = "groundtruth.json"
COUNTS_PER_KELVIN = 64.0  # synthetic raw counts: 64 x kelvin, within the range real M30T files show
_PAIR_FOLDERS = (("ir", "vi"), ("infrared", "visible"), ("IR", "VIS"))
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


class SynthFlightConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt setting is an error, not a no-op

    n: int = Field(8, ge=1, description="captures")
    seed: int = 0
    pairs: Path | None = Field(None, description="folder of aligned IR/visible pairs (ir/ + vi/)")
    profile: str = "m30t"
    altitude_m: tuple[float, float] = (60.0, 120.0)
    rig_rotation_deg: tuple[float, float, float] = (0.15, -0.2, 0.3)
    rig_offset_m: tuple[float, float, float] | None = Field(
        None, description="thermal optical centre in the wide frame; default: the profile's")
    start: datetime = datetime(2024, 5, 17, 10, 30, 0)
    latitude: float = 47.397742
    longitude: float = 8.545594
    ground_altitude_m: float = 420.0
    night: bool = False
    late_thermal_every: int = Field(5, ge=0, description="every k-th T file is named one second "
                                    "later than its W partner, as DJI write times sometimes are")
    jpeg_quality: int = Field(90, ge=50, le=100)
    show_progress: bool = True


@dataclass
class _Shot:
    sequence: int
    taken_at: datetime
    latitude: float
    longitude: float
    altitude_m: float
    flight_yaw_deg: float


def synth_flight(out_dir: str | Path, config: SynthFlightConfig | None = None) -> Path:
    """Write a synthetic flight to ``out_dir``; returns the ground-truth JSON path."""
    config = config or SynthFlightConfig()
    out = Path(out_dir).expanduser().resolve()
    profile = CameraProfile.load(config.profile)
    wide, thermal = profile.cameras["W"], profile.cameras["T"]
    rng = np.random.default_rng(config.seed)
    pairs = _pair_files(config.pairs) if config.pairs else None
    folder = out / "DCIM" / f"DJI_{config.start:%Y%m%d%H%M}_001_synthetic"
    rotation = rotation_matrix(config.rig_rotation_deg)
    offset = np.array(config.rig_offset_m or profile.rig.thermal_offset_m, float)
    records = []
    shots = list(_flight_path(config, rng))
    for shot in progress_bar(shots, "synth-flight", enabled=config.show_progress):
        distance = shot.altitude_m  # nadir gimbal: the range to the ground is the altitude
        # thermal pixel -> wide pixel: the thermal camera's points expressed in the wide frame
        thermal_to_wide = plane_homography(thermal.intrinsics(), wide.intrinsics(), rotation, offset, distance)
        if pairs is not None:
            visible, counts, objects, source = _from_pair(pairs, shot, wide, thermal, thermal_to_wide, rng)
        else:
            visible, counts, objects = _from_procedural(config, shot, wide, thermal, thermal_to_wide, rng)
            source = "procedural"
        files = _write_capture(folder, config, profile, shot, visible, counts, wide, thermal, distance)
        records.append({
            "sequence": shot.sequence,
            "timestamp": shot.taken_at.isoformat(),
            "files": {k: str(p.relative_to(out)) for k, p in files.items()},
            "source": source,
            "distance_m": distance,
            "thermal_to_wide": thermal_to_wide.tolist(),
            "wide_to_thermal": (np.linalg.inv(thermal_to_wide) / np.linalg.inv(thermal_to_wide)[2, 2]).tolist(),
            "objects": objects,
        })
    truth = {
        "generator": "ums synth-flight",
        "config": json.loads(config.model_dump_json()),
        "profile": profile.name,
        "conventions": {
            "pixels": "(x, y) with the centre of the top-left pixel at (0, 0)",
            "thermal_to_wide": "3x3 homography: thermal pixel -> wide (W) pixel",
            "raw_counts": f"uint16 = round({COUNTS_PER_KELVIN} x kelvin) + sensor noise",
        },
        "rig": {"thermal_offset_m": offset.tolist(), "thermal_rotation_deg": list(config.rig_rotation_deg)},
        "cameras": {"W": wide.model_dump() | {"focal_px": wide.focal_px},
                    "T": thermal.model_dump() | {"focal_px": thermal.focal_px}},
        "captures": records,
    }
    return write_text(out / GROUND_TRUTH_NAME, json.dumps(truth, indent=1))


def _flight_path(config: SynthFlightConfig, rng: np.random.Generator):
    """A lawnmower survey: legs of 6 shots, 25 m apart, 2 s apart."""
    metres_per_degree = 111_320.0
    for index in range(config.n):
        leg, step = divmod(index, 6)
        east = (step if leg % 2 == 0 else 5 - step) * 25.0
        north = leg * 40.0
        yield _Shot(
            sequence=index + 1,
            taken_at=config.start + timedelta(seconds=2 * index),
            latitude=config.latitude + north / metres_per_degree,
            longitude=config.longitude + east / (metres_per_degree * math.cos(math.radians(config.latitude))),
            altitude_m=float(rng.uniform(*config.altitude_m)),
            flight_yaw_deg=90.0 if leg % 2 == 0 else -90.0,
        )


# -- pixels ----------------------------------------------------------------------------------------
def _from_procedural(config, shot, wide: CameraModel, thermal: CameraModel, thermal_to_wide, rng):
    scene = render_scene(wide.width, wide.height, shot.altitude_m / wide.focal_px, rng, config.night)
    # Thermal optics blur about one thermal pixel (two temperature-map pixels) before sampling.
    temperature = cv2.GaussianBlur(scene.temperature, (0, 0), 1.2)
    to_map = pixel_scale_matrix(TEMPERATURE_SCALE) @ thermal_to_wide
    sampled = cv2.warpPerspective(temperature, to_map, (thermal.width, thermal.height),
                                  flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)
    counts = _temperature_to_counts(sampled, rng)
    wide_to_thermal = np.linalg.inv(thermal_to_wide)
    objects = [
        _object_truth(o.category, o.polygon, wide_to_thermal, thermal) for o in scene.objects
    ]
    return scene.visible, counts, [o for o in objects if o is not None]


def _from_pair(pairs, shot, wide: CameraModel, thermal: CameraModel, thermal_to_wide, rng):
    ir_path, vi_path = pairs[(shot.sequence - 1) % len(pairs)]
    visible = cv2.imread(str(vi_path), cv2.IMREAD_COLOR)
    infrared = cv2.imread(str(ir_path), cv2.IMREAD_GRAYSCALE)
    if visible is None or infrared is None:
        raise ValueError(f"synth-flight: cannot read the pair {vi_path} / {ir_path}")
    if visible.shape[:2] != infrared.shape[:2]:
        infrared = cv2.resize(infrared, (visible.shape[1], visible.shape[0]), interpolation=cv2.INTER_AREA)
    # The pair fills the thermal view as an ideal rig (no offset) would see it; the real rig's
    # offset and parallax then separate the two frames by the known thermal_to_wide.
    ideal = plane_homography(thermal.intrinsics(), wide.intrinsics(), np.eye(3), np.zeros(3), shot.altitude_m)
    pair_to_thermal = _fit_matrix(visible.shape[1], visible.shape[0], thermal.width, thermal.height)
    pair_to_wide = ideal @ pair_to_thermal
    wide_image = cv2.warpPerspective(visible, pair_to_wide, (wide.width, wide.height),
                                     flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    thermal_to_pair = np.linalg.inv(pair_to_wide) @ thermal_to_wide
    ir = cv2.warpPerspective(infrared.astype(np.float32), thermal_to_pair, (thermal.width, thermal.height),
                             flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)
    # Grey levels stand in for temperature: 0..255 -> ambient .. ambient + 25 K.
    counts = _temperature_to_counts(10.0 + ir * (25.0 / 255.0), rng)
    return wide_image, counts, [], str(vi_path.name)


def _temperature_to_counts(celsius: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noisy = celsius + rng.normal(0, 0.04, celsius.shape)  # ~40 mK NETD
    return np.clip(np.round((noisy + 273.15) * COUNTS_PER_KELVIN), 0, 65535).astype(np.uint16)


def _fit_matrix(src_w: int, src_h: int, dst_w: int, dst_h: int) -> np.ndarray:
    """Scale a (src_w, src_h) image to cover (dst_w, dst_h), centred (pixel-centre convention)."""
    scale = max(dst_w / src_w, dst_h / src_h)
    tx = (dst_w - 1) / 2 - scale * (src_w - 1) / 2
    ty = (dst_h - 1) / 2 - scale * (src_h - 1) / 2
    return np.array([[scale, 0, tx], [0, scale, ty], [0, 0, 1.0]])


def _object_truth(category: str, polygon_wide: np.ndarray, wide_to_thermal, thermal: CameraModel):
    polygon_thermal = apply_homography(wide_to_thermal, polygon_wide)
    box = _clip_box(polygon_thermal, thermal.width, thermal.height)
    if box is None:
        return None
    return {
        "category": category,
        "polygon_wide": np.round(polygon_wide, 2).tolist(),
        "box_wide": np.round([*polygon_wide.min(0), *polygon_wide.max(0)], 2).tolist(),
        "polygon_thermal": np.round(polygon_thermal, 3).tolist(),
        "box_thermal": box,
    }


def _clip_box(polygon: np.ndarray, width: int, height: int) -> list[float] | None:
    x0, y0 = np.maximum(polygon.min(0), -0.5)
    x1, y1 = np.minimum(polygon.max(0), [width - 0.5, height - 0.5])
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    return [round(float(v), 3) for v in (x0, y0, x1, y1)]


def _pair_files(folder: Path) -> list[tuple[Path, Path]]:
    folder = Path(folder)
    for ir_name, vi_name in _PAIR_FOLDERS:
        ir_dir, vi_dir = folder / ir_name, folder / vi_name
        if ir_dir.is_dir() and vi_dir.is_dir():
            visible = {p.stem: p for p in vi_dir.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES}
            pairs = [(p, visible[p.stem]) for p in sorted(ir_dir.iterdir())
                     if p.suffix.lower() in _IMAGE_SUFFIXES and p.stem in visible]
            if pairs:
                return pairs
    raise FileNotFoundError(f"synth-flight: no aligned pairs in {folder} (expected ir/ and vi/ "
                            "subfolders with files of the same names)")


# -- files -----------------------------------------------------------------------------------------
def _write_capture(folder, config, profile, shot, visible, counts, wide, thermal, distance):
    stamp = shot.taken_at
    late = config.late_thermal_every and shot.sequence % config.late_thermal_every == 0
    thermal_stamp = stamp + timedelta(seconds=1) if late else stamp
    wide_path = folder / f"DJI_{stamp:%Y%m%d%H%M%S}_{shot.sequence:04d}_W.JPG"
    thermal_path = folder / f"DJI_{thermal_stamp:%Y%m%d%H%M%S}_{shot.sequence:04d}_T.JPG"
    preview = cv2.cvtColor(stretch_to_uint8(counts), cv2.COLOR_GRAY2BGR)
    for path, image, camera, raw, description in (
        (wide_path, visible, wide, None, "default"),
        (thermal_path, preview, thermal, counts, "WhiteHot"),
    ):
        exif = build_exif(
            "DJI", profile.exif_model, stamp, camera.focal_length_mm, camera.f_number,
            camera.focal_length_35mm, camera.width, camera.height, shot.latitude, shot.longitude,
            config.ground_altitude_m + shot.altitude_m, description,
        )
        xmp = _xmp_fields(profile, camera, shot, config, distance)
        write_bytes(path, encode_dji_jpeg(image, exif, xmp, raw, config.jpeg_quality))
    return {"W": wide_path, "T": thermal_path}


def _xmp_fields(profile: CameraProfile, camera: CameraModel, shot: _Shot, config, distance: float):
    cx, cy = camera.principal_point
    f = camera.focal_px
    fields = {
        "Version": "1.0",
        "ImageSource": camera.image_source,
        "GpsStatus": "RTK",
        "AltitudeType": "RtkAlt",
        "GpsLatitude": f"{shot.latitude:+.9f}",
        "GpsLongitude": f"{shot.longitude:+.9f}",
        "AbsoluteAltitude": f"{config.ground_altitude_m + shot.altitude_m:+.3f}",
        "RelativeAltitude": f"{shot.altitude_m:+.3f}",
        "GimbalRollDegree": "+0.00",
        "GimbalYawDegree": f"{shot.flight_yaw_deg:+.2f}",
        "GimbalPitchDegree": "-90.00",
        "FlightRollDegree": "+0.10",
        "FlightYawDegree": f"{shot.flight_yaw_deg:+.2f}",
        "FlightPitchDegree": "-1.20",
        "FlightXSpeed": "+0.00",
        "FlightYSpeed": "+0.00",
        "FlightZSpeed": "+0.00",
        "CamReverse": "0",
        "GimbalReverse": "0",
        "SelfData": "",
        "CalibratedFocalLength": f"{f:.6f}",
        "CalibratedOpticalCenterX": f"{cx:.6f}",
        "CalibratedOpticalCenterY": f"{cy:.6f}",
        "UTCAtExposure": f"{shot.taken_at:%Y:%m:%d %H:%M:%S}.000000",
        "CameraSerialNumber": "SYNTH-CAM-0001",
        "DroneModel": profile.drone_model,
        "DroneSerialNumber": "SYNTH-DRONE-0001",
        "LRFStatus": "Normal",
        "LRFTargetDistance": f"{distance:.3f}",
        "LRFTargetLon": f"{shot.longitude:.7f}",
        "LRFTargetLat": f"{shot.latitude:.7f}",
        "LRFTargetAlt": f"{config.ground_altitude_m:.3f}",
        "LRFTargetAbsAlt": f"{config.ground_altitude_m:.3f}",
        "SurveyingMode": "1",
    }
    if camera.role == "wide":
        # Rendered as an ideal pinhole: the calibration carries no distortion.
        fields["DewarpData"] = f"{shot.taken_at:%Y-%m-%d};{f:.6f},{f:.6f},0.000000,0.000000,0,0,0,0,0"
    return fields
