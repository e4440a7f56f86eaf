"""Camera profiles (``pipelines/cameras/*.yaml``) and the rig geometry between visible and thermal.

Conventions: pixel coordinates put the centre of the top-left pixel at (0, 0); a camera frame has
x right, y down, z forward; homographies map pixel coordinates of one image to the other.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import yaml
from pydantic import BaseModel, Field

from ums.resources import resource_dir

PROFILE_DIR = resource_dir("pipelines") / "cameras"


class CameraModel(BaseModel):
    role: str
    image_source: str
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    dfov_deg: float = Field(gt=0, lt=180)
    focal_length_mm: float = Field(gt=0)
    focal_length_35mm: float | None = None
    f_number: float | None = None

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
