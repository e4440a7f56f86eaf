"""Camera profiles (``pipelines/cameras/*.yaml``) and the rig geometry between visible and thermal.

Conventions: pixel coordinates put the centre of the top-left pixel at (0, 0); a camera frame has
x right, y down, z forward; homographies map pixel coordinates of one image to the other.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import yaml
from pydantic import BaseModel, Field

from ums.dji.filenames import THERMAL_LETTERS
from ums.core.resources import resource_dir

PROFILE_DIR = resource_dir("pipelines") / "cameras"
# Frame sizes DJI thermal cameras write besides those in the profiles: the XT and XT2 (336x256,
# 640x512), the M2EA, H20T, M3T and M4T (640x512), UHR renderings and the H30T (1280x1024).
THERMAL_FRAME_SIZES = frozenset({(640, 512), (1280, 1024), (336, 256), (320, 256), (640, 480)})
# How far a declared size may exceed the largest frame in the profiles (a visible camera of a model
# without a profile) before it is refused, and how large a file may be per pixel of that frame: a
# JPEG of pure noise at quality 100 without chroma subsampling takes about 4.1 bytes per pixel, and
# R-JPEG metadata adds megabytes.
FRAME_PIXELS_FACTOR = 2
SOURCE_BYTES_PER_PIXEL = 2 * 3
SOURCE_METADATA_BYTES = 64 << 20


class CameraModel(BaseModel):
    role: str
    image_source: str
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    dfov_deg: float = Field(gt=0, lt=180)
    focal_length_mm: float = Field(gt=0)
    focal_length_35mm: float | None = None
    f_number: float | None = None
    # sizes the camera also writes (the intrinsics scale to them): a zoom's full resolution, UHR thermal
    other_sizes: list[tuple[int, int]] = Field(default_factory=list)

    @property
    def frame_sizes(self) -> list[tuple[int, int]]:
        return [(self.width, self.height), *self.other_sizes]

    @property
    def focal_px(self) -> float:
        """Focal length in pixels from the diagonal field of view."""
        half_diagonal = math.hypot(self.width, self.height) / 2.0
        return half_diagonal / math.tan(math.radians(self.dfov_deg) / 2.0)

    @property
    def principal_point(self) -> tuple[float, float]:
        return (self.width - 1) / 2.0, (self.height - 1) / 2.0

    def intrinsics(self, width: int | None = None, height: int | None = None) -> np.ndarray:
        """K for this camera, or for its image resampled to ``width`` x ``height`` (e.g. a UHR
        rendering of a 640x512 sensor)."""
        cx, cy = self.principal_point
        f = self.focal_px
        K = np.array([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]])
        if width is None:
            return K
        return pixel_scale_matrix(width / self.width, height / self.height) @ K


class RigModel(BaseModel):
    thermal_offset_m: tuple[float, float, float] = (0.03, 0.0, 0.0)
    thermal_rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)


class CameraProfile(BaseModel):
    name: str
    drone_model: str
    exif_model: str
    cameras: dict[str, CameraModel]
    rig: RigModel = Field(default_factory=RigModel)

    @classmethod
    def load(cls, name_or_path: str | Path = "m30t") -> CameraProfile:
        """A profile by name (``m30t`` reads ``pipelines/cameras/m30t.yaml``) or by path."""
        path = Path(name_or_path)
        if not path.suffix:
            path = PROFILE_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise FileNotFoundError(f"camera profile {path} does not exist")
        return cls.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))


@lru_cache(maxsize=1)
def known_profiles() -> tuple[CameraProfile, ...]:
    """Every profile in ``pipelines/cameras``."""
    return tuple(CameraProfile.load(path) for path in sorted(PROFILE_DIR.glob("*.yaml")))


def profile_for_model(exif_model: str | None) -> CameraProfile | None:
    """The profile of the drone whose EXIF Model is ``exif_model``, if there is one."""
    model = (exif_model or "").strip().upper()
    return next((p for p in known_profiles() if model and p.exif_model.upper() == model), None)


@lru_cache(maxsize=1)
def thermal_frame_sizes() -> tuple[tuple[int, int], ...]:
    """Every size a DJI thermal frame comes in, smallest first."""
    profiled = {size for p in known_profiles() for letter, c in p.cameras.items() if letter in THERMAL_LETTERS
                for size in c.frame_sizes}
    return tuple(sorted(THERMAL_FRAME_SIZES | profiled, key=lambda size: (size[0] * size[1], size)))


@lru_cache(maxsize=1)
def largest_frame_pixels() -> int:
    sizes = [size for p in known_profiles() for c in p.cameras.values() for size in c.frame_sizes]
    return max(w * h for w, h in [*sizes, *THERMAL_FRAME_SIZES])


def max_frame_pixels() -> int:
    """The most pixels a frame may declare, whatever its camera."""
    return FRAME_PIXELS_FACTOR * largest_frame_pixels()


def max_source_bytes() -> int:
    """The largest file a DJI frame can be: larger ones are not read at all."""
    return SOURCE_BYTES_PER_PIXEL * largest_frame_pixels() + SOURCE_METADATA_BYTES


def frame_size_problem(camera: str, width: int, height: int, exif_model: str | None,
                       coded_bytes: int | None = None) -> str | None:
    """Why a frame cannot be the ``width`` x ``height`` its JPEG header declares (None when it can).

    A header that lies would be decoded into a scrambled image, or into gigabytes. The size is held
    to the camera's: any DJI thermal size for a thermal frame, the profile's sizes for a visible frame
    of a drone with a profile (matched by EXIF Model), and a limit for every frame. ``coded_bytes``
    (the image data, when its size bounds the pixels: see JpegHeader.coded_bytes) must hold at least
    one bit per 8x8 block."""
    declared = f"the JPEG header declares {width}x{height} pixels"
    refused = "refused before decoding"
    expected = _expected_sizes(camera, exif_model)
    if expected is not None and (width, height) not in expected[1]:
        return f"{declared}, but {expected[0]} {_one_of(expected[1])}: {refused}"
    limit = max_frame_pixels()
    if width * height > limit:
        return (f"{declared} ({width * height / 1e6:.0f} MP), over the {limit / 1e6:.0f} MP limit, twice the "
                f"largest frame of the camera profiles: {refused}")
    least = math.ceil(width / 8) * math.ceil(height / 8) // 8
    if coded_bytes is not None and coded_bytes < least:
        return (f"{declared}, but the file holds only {coded_bytes:,} bytes of image data, fewer than the "
                f"{least:,} bytes (1 bit per 8x8 block) that many pixels need at the least: {refused}")
    return None


def _expected_sizes(camera: str, exif_model: str | None) -> tuple[str, list[tuple[int, int]]] | None:
    """Who writes which sizes, for a frame whose camera has known sizes."""
    if camera in THERMAL_LETTERS:
        return f"a DJI thermal frame ({camera}) is", list(thermal_frame_sizes())
    profile = profile_for_model(exif_model)
    if profile is None or camera not in profile.cameras:
        return None  # a drone without a profile: its cameras' sizes are not known here
    model = profile.cameras[camera]
    return f"the {profile.name}'s {model.role} camera ({camera}) writes", model.frame_sizes


def _one_of(sizes: list[tuple[int, int]]) -> str:
    names = [f"{w}x{h}" for w, h in sizes]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def rotation_matrix(angles_deg: tuple[float, float, float]) -> np.ndarray:
    """Rotation from small (rx, ry, rz) angles in degrees, applied as Rz @ Ry @ Rx."""
    rx, ry, rz = (math.radians(a) for a in angles_deg)
    cx, sx, cy, sy, cz, sz = math.cos(rx), math.sin(rx), math.cos(ry), math.sin(ry), math.cos(rz), math.sin(rz)
    r_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    r_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    r_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return r_z @ r_y @ r_x


def plane_homography(
    source_intrinsics: np.ndarray,
    target_intrinsics: np.ndarray,
    rotation: np.ndarray,
    translation_m: np.ndarray,
    distance_m: float,
) -> np.ndarray:
    """Pixel homography from a source camera to a target camera for a fronto-parallel plane.

    A point X in the source camera frame is ``rotation @ X + translation_m`` in the target frame;
    on the plane z = d that is ``(R + t n^T / d) X`` with n = (0, 0, 1), hence
    H = K_target (R + t n^T / d) K_source^-1. The t n^T / d term is the parallax of the baseline;
    ``distance_m = inf`` drops it (the homography at infinity).
    """
    normal = np.array([[0.0, 0.0, 1.0]])
    parallax = 0.0 if math.isinf(distance_m) else np.asarray(translation_m, float).reshape(3, 1) @ normal / distance_m
    homography = target_intrinsics @ (rotation + parallax) @ np.linalg.inv(source_intrinsics)
    return homography / homography[2, 2]


def pixel_scale_matrix(scale_x: float, scale_y: float | None = None) -> np.ndarray:
    """Resize in the pixel-centre convention: x' = (x + 0.5) * s - 0.5."""
    scale_y = scale_x if scale_y is None else scale_y
    return np.array([[scale_x, 0, 0.5 * scale_x - 0.5], [0, scale_y, 0.5 * scale_y - 0.5], [0, 0, 1.0]])


def apply_homography(homography: np.ndarray, points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, float).reshape(-1, 2)
    homogeneous = np.hstack([points, np.ones((len(points), 1))]) @ homography.T
    return homogeneous[:, :2] / homogeneous[:, 2:3]
