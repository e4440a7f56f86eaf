import math

import numpy as np
import pytest

from ums.camera import CameraProfile, apply_homography, plane_homography, rotation_matrix


@pytest.fixture(scope="module")
def m30t():
    return CameraProfile.load("m30t")


def test_m30t_thermal_window_in_the_wide_frame(m30t):
    wide, thermal = m30t.cameras["W"], m30t.cameras["T"]
    # docs/reference/dji-m30t.md: the thermal view is a central window of about 2554x2044 px of the wide frame
    scale = wide.focal_px / thermal.focal_px
    assert thermal.width * scale == pytest.approx(2554, abs=3)
    assert thermal.height * scale == pytest.approx(2044, abs=3)


def test_pure_rotation_maps_principal_points(m30t):
    wide, thermal = m30t.cameras["W"], m30t.cameras["T"]
    h = plane_homography(thermal.intrinsics(), wide.intrinsics(), np.eye(3), np.zeros(3), 50.0)
    centre = apply_homography(h, np.array([thermal.principal_point]))[0]
    np.testing.assert_allclose(centre, wide.principal_point, atol=1e-9)


def test_parallax_shift_is_f_times_baseline_over_distance(m30t):
    wide, thermal = m30t.cameras["W"], m30t.cameras["T"]
    for distance in (5.0, 30.0, 100.0):
        h = plane_homography(thermal.intrinsics(), wide.intrinsics(), np.eye(3), np.array([0.03, 0, 0]), distance)
        centre = apply_homography(h, np.array([thermal.principal_point]))[0]
        assert centre[0] - wide.principal_point[0] == pytest.approx(wide.focal_px * 0.03 / distance)


def test_small_rotation_shift(m30t):
    wide, thermal = m30t.cameras["W"], m30t.cameras["T"]
    h = plane_homography(thermal.intrinsics(), wide.intrinsics(), rotation_matrix((0, 0.5, 0)), np.zeros(3), 80.0)
    centre = apply_homography(h, np.array([thermal.principal_point]))[0]
    # a yaw of 0.5 degrees moves the view by f * tan(0.5 deg) pixels
    assert centre[0] - wide.principal_point[0] == pytest.approx(wide.focal_px * math.tan(math.radians(0.5)), rel=1e-6)


def test_profile_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        CameraProfile.load("no-such-drone")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndrone_model: y\nexif_model: z\ncameras: {T: {role: thermal, image_source: I, "
                   "width: -1, height: 5, dfov_deg: 60, focal_length_mm: 9}}\n")
    with pytest.raises(ValueError, match="width"):
        CameraProfile.load(bad)


def test_infinite_distance_drops_parallax(m30t):
    wide, thermal = m30t.cameras["W"], m30t.cameras["T"]
    far = plane_homography(thermal.intrinsics(), wide.intrinsics(), np.eye(3), np.array([0.03, 0, 0]), math.inf)
    none = plane_homography(thermal.intrinsics(), wide.intrinsics(), np.eye(3), np.zeros(3), 10.0)
    np.testing.assert_allclose(far, none)


def test_intrinsics_of_a_resampled_image(m30t):
    thermal = m30t.cameras["T"]
    uhr = thermal.intrinsics(1280, 1024)
    assert uhr[0, 0] == pytest.approx(2 * thermal.focal_px)
    # the centre of the 640x512 grid is the centre of the 1280x1024 grid
    assert uhr[0, 2] == pytest.approx((1280 - 1) / 2) and uhr[1, 2] == pytest.approx((1024 - 1) / 2)
