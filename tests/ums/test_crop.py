from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from ums.camera import CameraProfile, apply_homography, plane_homography
from ums.crop import (
    decode_mapped,
    _empty_crop_reason,
    CropConfig,
    capture_distance,
    common_region,
    crop_workspace,
    decode_reduction,
    frame_intrinsics,
    _distort,
)
from ums.core.executors import ExecutorSettings
from ums.ingest import IngestConfig, ingest_flight
from ums.core.records import ExifSummary, FrameRecord, XmpField
from ums.synth import SynthFlightConfig, synth_flight
from ums.core.workspace import Workspace

QUIET = ExecutorSettings(show_progress=False)
IN_PROCESS = ExecutorSettings(show_progress=False, workers=1)


def cropped_workspace(flight, path, config=None):
    ws = Workspace.open(path)
    ingest_flight(ws, flight, IngestConfig(), QUIET)
    report = crop_workspace(ws, config, QUIET)
    return ws, report


def frame(xmp: dict[str, str], width=4000, height=3000) -> FrameRecord:
    from ums.dji.xmp import _field

    return FrameRecord(path="x.jpg", sha256="0", width=width, height=height, camera_letter="W", size=1,
                       exif=ExifSummary(), xmp={k: XmpField(**_field(k, v)) for k, v in xmp.items()})


@pytest.fixture(scope="module")
def exact_flight(tmp_path_factory):
    """A flight whose rig has no rotation: the crop's geometry alone must be exact."""
    out = tmp_path_factory.mktemp("exact")
    synth_flight(out, SynthFlightConfig(n=2, seed=1, rig_rotation_deg=(0, 0, 0), show_progress=False))
    return out


@pytest.mark.parametrize("use_xmp", [True, False], ids=["xmp-calibration", "camera-profile"])
def test_crop_geometry_equals_the_ground_truth(exact_flight, tmp_path, use_xmp):
    ws, report = cropped_workspace(exact_flight, tmp_path / "ws", CropConfig(use_xmp_calibration=use_xmp))
    assert report.done == 2
    truth = {c["sequence"]: c for c in json.loads((exact_flight / "groundtruth.json").read_text())["captures"]}
    grid = np.array([[x, y] for x in (0, 320, 639) for y in (0, 256, 511)], float)
    for capture in ws.captures():
        result = ws.stage_results(capture.capture_id)["crop"]
        ours = np.array(result["thermal_to_visible"]) @ np.array(result["output_to_thermal"])
        expected = np.array(truth[capture.sequence]["thermal_to_wide"])
        # XMP keeps 6 decimals of the calibration and 3 of the LRF range: exact to 1e-3 px
        assert np.abs(apply_homography(ours, grid) - apply_homography(expected, grid)).max() < 1e-3
        assert result["decode_reduction"] == 4  # 4000x3000 -> 640x512 needs only the 1/4 decode
        assert result["distance_source"] == "LRFTargetDistance"
        assert result["profile"] == "m30t"  # autolabel's native detection takes the lens from the same profile
        assert result["intrinsics_source"]["visible"] == ("xmp DewarpData" if use_xmp else "profile")
        assert result["visible_coverage"] == 1.0
    ws.close()


def test_cropped_visible_matches_the_thermal_on_an_identical_pair(tmp_path):
    pairs = tmp_path / "pairs"
    (pairs / "ir").mkdir(parents=True)
    (pairs / "vi").mkdir()
    rng = np.random.default_rng(2)
    texture = cv2.GaussianBlur(cv2.resize(rng.integers(0, 255, (64, 80), dtype=np.uint8), (640, 512),
                                          interpolation=cv2.INTER_CUBIC), (0, 0), 2)
    cv2.imwrite(str(pairs / "vi" / "a.png"), cv2.cvtColor(texture, cv2.COLOR_GRAY2BGR))
    cv2.imwrite(str(pairs / "ir" / "a.png"), texture)
    synth_flight(tmp_path / "f", SynthFlightConfig(n=1, pairs=pairs, rig_rotation_deg=(0, 0, 0), show_progress=False))
    ws, _ = cropped_workspace(tmp_path / "f", tmp_path / "ws")
    result = ws.stage_results(ws.captures()[0].capture_id)["crop"]
    visible = cv2.imread(str(ws.absolute(result["files"]["vis"])), cv2.IMREAD_GRAYSCALE).astype(float)
    # on the thermal grid the raw counts are ingest's own PNG, not a copy
    assert result["files"]["ir16"] == ws.captures()[0].thermal_raw.path
    counts = cv2.imread(str(ws.absolute(result["files"]["ir16"])), cv2.IMREAD_UNCHANGED).astype(float)
    inner = (slice(20, -20), slice(20, -20))
    assert np.corrcoef(visible[inner].ravel(), counts[inner].ravel())[0, 1] > 0.98
    ws.close()


def test_rerun_skips_and_a_changed_setting_redoes(exact_flight, tmp_path):
    ws, _ = cropped_workspace(exact_flight, tmp_path / "ws")
    assert crop_workspace(ws, executor=QUIET).skipped == 2
    assert crop_workspace(ws, CropConfig(output_width=1280, output_height=1024), QUIET).done == 2
    result = ws.stage_results(ws.captures()[0].capture_id)["crop"]
    assert result["decode_reduction"] == 2 and result["output_size"] == [1280, 1024]
    assert cv2.imread(str(ws.absolute(result["files"]["vis"]))).shape == (1024, 1280, 3)
    resampled_counts = ws.absolute(result["files"]["ir16"])
    assert cv2.imread(str(resampled_counts), cv2.IMREAD_UNCHANGED).shape == (1024, 1280)
    crop_workspace(ws, executor=QUIET)  # back on the thermal grid: the resampled counts of the run before go
    assert not resampled_counts.exists()
    ws.close()


def test_unreadable_visible_is_a_recorded_failure(exact_flight, tmp_path):
    import shutil

    flight = tmp_path / "flight"
    shutil.copytree(exact_flight, flight)
    ws = Workspace.open(tmp_path / "ws")
    ingest_flight(ws, flight, IngestConfig(), QUIET)
    broken = next(flight.rglob("*_0001_W.JPG"))
    broken.write_bytes(broken.read_bytes()[:2000])  # damaged after ingest
    report = crop_workspace(ws, executor=QUIET)
    assert (report.done, report.failed) == (1, 1)
    assert "crop failed" in report.issues[0].message and report.issues[0].file.endswith("_T.JPG")
    ws.close()


def test_a_narrower_visible_camera_cuts_the_thermal_frame():
    profile = CameraProfile.load("m30t")
    thermal, zoom = profile.cameras["T"], profile.cameras["Z"]
    h = plane_homography(thermal.intrinsics(), zoom.intrinsics(), np.eye(3), np.zeros(3), math.inf)
    x0, y0, x1, y1 = common_region(h, (640, 512), (4000, 3000), 640 / 512)
    assert 0 < x0 < x1 < 640 and 0 < y0 < y1 < 512
    assert (x1 - x0) / (y1 - y0) == pytest.approx(1.25)
    corners = apply_homography(h, np.array([[x0 - 0.5, y0 - 0.5], [x1 - 0.5, y1 - 0.5]]))
    assert (corners >= -0.5 - 1e-6).all() and (corners[1] <= np.array([3999.5, 2999.5]) + 1e-6).all()
    # the wide camera sees all of the thermal view
    wide = plane_homography(thermal.intrinsics(), profile.cameras["W"].intrinsics(), np.eye(3), np.zeros(3), math.inf)
    assert common_region(wide, (640, 512), (4000, 3000), 1.25) == (0.0, 0.0, 640.0, 512.0)


def test_views_that_do_not_overlap_are_refused():
    far_away = np.array([[1, 0, 10_000], [0, 1, 0], [0, 0, 1.0]])
    with pytest.raises(ValueError, match="do not overlap"):
        common_region(far_away, (640, 512), (4000, 3000), 1.25)


def test_decode_reduction_follows_the_scale():
    assert decode_reduction(np.diag([4.0, 4.0, 1.0]), (640, 512), 8) == 4
    assert decode_reduction(np.diag([4.0, 4.0, 1.0]), (640, 512), 2) == 2
    assert decode_reduction(np.diag([1.0, 1.0, 1.0]), (640, 512), 8) == 1
    assert decode_reduction(np.diag([16.0, 16.0, 1.0]), (640, 512), 8) == 8


def test_intrinsics_sources():
    wide = CameraProfile.load("m30t").cameras["W"]
    K, distortion, source = frame_intrinsics(frame({}), wide, 4000, 3000, True)
    assert source == "profile" and K[0, 0] == pytest.approx(wide.focal_px)
    # a thermal-style value in another unit (9100 for 9.1 mm) is not a focal length in pixels
    _, _, source = frame_intrinsics(frame({"CalibratedFocalLength": "9100.000000"}), wide, 4000, 3000, True)
    assert source == "profile"
    K, _, source = frame_intrinsics(frame({"CalibratedFocalLength": "2900.0", "CalibratedOpticalCenterX": "2010.5",
                                           "CalibratedOpticalCenterY": "1490.0"}), wide, 4000, 3000, True)
    assert source == "xmp CalibratedFocalLength" and (K[0, 0], K[0, 2], K[1, 2]) == (2900.0, 2010.5, 1490.0)
    K, distortion, source = frame_intrinsics(
        frame({"DewarpData": "2024-01-01;2800.0,2795.0,12.0,-8.0,-0.1,0.05,0.001,-0.002,0.01"}), wide, 2000, 1500, True)
    assert source == "xmp DewarpData"
    assert K[0, 0] == pytest.approx(1400.0) and K[0, 2] == pytest.approx((1999.5 + 12.0 + 0.5) / 2 - 0.5)
    np.testing.assert_allclose(distortion, [-0.1, 0.05, 0.001, -0.002, 0.01])


def test_distortion_model():
    K = np.array([[1000.0, 0, 500], [0, 1000.0, 400], [0, 0, 1]])
    points = np.array([[500.0, 400.0], [900.0, 400.0]])
    np.testing.assert_allclose(_distort(points, K, np.zeros(5)), points)
    barrel = _distort(points, K, np.array([-0.2, 0, 0, 0, 0]))
    assert barrel[0] == pytest.approx(points[0]) and barrel[1, 0] < 900  # pulled towards the centre
    # the same convention as OpenCV's projectPoints
    rays = np.array([[0.4, 0.0, 1.0]])
    expected, _ = cv2.projectPoints(rays, np.zeros(3), np.zeros(3), K, np.array([-0.2, 0.01, 0.001, 0.002, 0.003]))
    ours = _distort(np.array([[900.0, 400.0]]), K, np.array([-0.2, 0.01, 0.001, 0.002, 0.003]))
    np.testing.assert_allclose(ours, expected.reshape(1, 2), atol=1e-9)


def test_capture_distance_sources():
    assert capture_distance(frame({"LRFTargetDistance": "42.5", "LRFStatus": "Normal"})) == (42.5, "LRFTargetDistance")
    distance, source = capture_distance(frame({"LRFTargetDistance": "0.000", "RelativeAltitude": "+60.0",
                                               "GimbalPitchDegree": "-60.0"}))
    assert distance == pytest.approx(60 / math.cos(math.radians(30))) and source.startswith("RelativeAltitude")
    assert capture_distance(frame({}))[0] == math.inf
    # a range finder without a target: the altitude, and the reason
    assert capture_distance(frame({"LRFTargetDistance": "42.5", "LRFStatus": "NoTarget", "RelativeAltitude": "60",
                                   "GimbalPitchDegree": "-90"})) == (60.0, "RelativeAltitude / cos(gimbal) (LRF status 'NoTarget')")


def copied_flight(exact_flight, tmp_path):
    import shutil

    flight = tmp_path / "flight"
    shutil.copytree(exact_flight, flight)
    return flight




def test_a_header_over_the_crop_limit_is_refused_before_decoding(exact_flight, tmp_path):
    # ingest refuses sizes no camera writes (tests/ums/test_hostile_files.py); crop's own limit is lower
    ws, report = cropped_workspace(exact_flight, tmp_path / "ws", CropConfig(max_visible_pixels=10_000_000))
    assert (report.done, report.failed) == (0, 2)
    wide = sorted(capture.frames["W"].path for capture in ws.captures())
    assert sorted(issue.message for issue in report.issues) == [
        f"crop failed: {path}: the JPEG header claims 4000x3000 pixels, more than max_visible_pixels (10,000,000); "
        "refused before decoding (rerun `ums crop` to retry)" for path in wide]
    assert not list((ws.root / "crop").glob("*/vis.*"))
    ws.close()


def test_a_tiny_visible_frame_is_refused_not_cropped_black(exact_flight, tmp_path):
    flight = copied_flight(exact_flight, tmp_path)
    cv2.imwrite(str(next(flight.rglob("*_0001_W.JPG"))), np.zeros((1, 1, 3), np.uint8))
    ws, report = cropped_workspace(flight, tmp_path / "ws")
    assert (report.done, report.failed) == (1, 1)
    assert "a 1x1 visible frame is too small to crop" in report.issues[0].message
    assert [s["status"] for s in (ws.stage_result(c.capture_id, "crop") for c in ws.captures())].count("done") == 1
    ws.close()


def test_an_empty_or_constant_crop_is_not_a_pair():
    covered = np.full((512, 640), 255, np.uint8)
    constant = np.full((512, 640, 3), 128, np.uint8)
    assert "one constant colour" in _empty_crop_reason(constant, covered)
    sliver = np.zeros((512, 640), np.uint8)
    sliver[:, :16] = 255  # 2.5 % of the thermal view
    assert "covers only 2.5%" in _empty_crop_reason(constant, sliver)
    textured = np.random.default_rng(0).integers(0, 255, (512, 640, 3), np.uint8)
    assert _empty_crop_reason(textured, covered) is None


def test_the_mapped_decode_is_opencvs_and_refuses_what_it_cannot_read(tmp_path):
    image = np.random.default_rng(3).integers(0, 255, (96, 128, 3), np.uint8)
    jpeg = tmp_path / "frame.jpg"
    cv2.imwrite(str(jpeg), image)
    flags = cv2.IMREAD_REDUCED_COLOR_2 | cv2.IMREAD_IGNORE_ORIENTATION
    assert np.array_equal(decode_mapped(jpeg, flags), cv2.imread(str(jpeg), flags))
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_bytes(b"not a jpeg at all")
    assert decode_mapped(tmp_path / "empty.jpg", flags) is None
    assert decode_mapped(tmp_path / "text.jpg", flags) is None


def test_a_crop_that_raises_once_is_failed_and_the_rerun_retries_it(exact_flight, tmp_path, monkeypatch):
    from ums import crop

    ws = Workspace.open(tmp_path / "ws")
    ingest_flight(ws, exact_flight, IngestConfig(), QUIET)
    real_decode, calls = crop.decode_mapped, []

    def decode_out_of_memory_once(*args):
        calls.append(args)
        if len(calls) == 1:
            raise MemoryError("cannot allocate 36 MB")
        return real_decode(*args)

    monkeypatch.setattr(crop, "decode_mapped", decode_out_of_memory_once)
    report = crop_workspace(ws, executor=IN_PROCESS)  # in this process, where the patch is
    assert (report.planned, report.done, report.failed) == (2, 1, 1)
    [issue] = report.issues
    assert issue.message == "crop failed: unexpected MemoryError: cannot allocate 36 MB (rerun `ums crop` to retry)"
    assert ws.stage_result(issue.capture_id, "crop")["status"] == "failed"
    again = crop_workspace(ws, executor=IN_PROCESS)
    assert (again.done, again.skipped, again.failed, again.issues) == (1, 1, 0, [])
    ws.close()
