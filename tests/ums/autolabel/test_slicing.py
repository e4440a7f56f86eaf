from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from ums.autolabel.slicing import (
    SlicingConfig,
    cheaper_windows,
    decide,
    ground_sample_distance,
    pixel_noise,
    slice_count,
    slice_zoom,
    sliced_detect,
    spot_windows,
    warm_spots,
)
from ums.camera import CameraProfile
from ums.detections import Detections


class SquareFinder:
    """A 'detector' that finds the bright squares of its input, in its input's pixels (cut ones too)."""

    taxonomy = "coco"

    def __init__(self):
        self.calls, self.sizes = [], []

    def detect(self, image: np.ndarray, image_size: int | None = None) -> Detections:
        self.calls.append(image.shape[:2])
        self.sizes.append(image_size)
        grey = image if image.ndim == 2 else image[..., 0]
        count, _, stats, _ = cv2.connectedComponentsWithStats((grey > 128).astype(np.uint8))
        boxes = [[x, y, x + w, y + h] for x, y, w, h, _ in stats[1:count]]
        return Detections(np.array(boxes, float), np.full(len(boxes), 0.9), np.zeros(len(boxes)), self.taxonomy)


SQUARES = [(100, 100, 40), (600, 300, 40), (1500, 1100, 30), (1900, 1400, 60)]  # x, y, side


def image_with_squares(grey: bool = False) -> np.ndarray:
    image = np.zeros((1500, 2000) if grey else (1500, 2000, 3), np.uint8)
    for x, y, side in SQUARES:
        image[y:y + side, x:x + side] = 255
    return image


def expected_boxes() -> list[list[float]]:
    return sorted([float(x), float(y), float(x + min(side, 2000 - x)), float(y + min(side, 1500 - y))]
                  for x, y, side in SQUARES)


@pytest.mark.parametrize("full_image_pass", [True, False])
def test_slices_assemble_detections_at_their_global_coordinates(full_image_pass):
    finder = SquareFinder()
    found = sliced_detect(finder, image_with_squares(), SlicingConfig(full_image_pass=full_image_pass))
    # 2000x1500 in 640 px slices overlapping 128 px: 4 across, 3 down; the square at x 600..640 is
    # cut by the first slice's border and whole in the second: merged into one whole box
    assert len(finder.calls) == 12 + full_image_pass
    assert sorted(finder.calls[:12]) == [(640, 640)] * 12 and finder.sizes == [640] * 12 + [None] * full_image_pass
    assert sorted(found.boxes.tolist()) == expected_boxes()
    assert found.taxonomy == "coco" and found.classes.tolist() == [0] * 4
    np.testing.assert_allclose(found.scores, 0.9)


def test_grey_images_slice_too_and_runs_are_identical():
    first = sliced_detect(SquareFinder(), image_with_squares(grey=True), SlicingConfig())
    second = sliced_detect(SquareFinder(), image_with_squares(grey=True), SlicingConfig())
    assert sorted(first.boxes.tolist()) == expected_boxes()
    assert first.boxes.tobytes() == second.boxes.tobytes() and first.scores.tobytes() == second.scores.tobytes()


def test_slicing_leaves_the_gpu_visible():
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    sliced_detect(SquareFinder(), image_with_squares(), SlicingConfig())
    assert os.environ.get("CUDA_VISIBLE_DEVICES") == before  # SAHI's own device selection would set -1


def test_auto_slices_the_m30t_wide_view_at_120_m_and_not_at_30_m():
    profile = CameraProfile.load("m30t")
    wide, thermal = profile.cameras["W"], profile.cameras["T"]
    # the thermal field of view in wide pixels: ~4x the 640x512 thermal grid
    ratio = wide.focal_px / thermal.focal_px
    size = (round(640 * ratio), round(512 * ratio))
    assert 3.9 < ratio < 4.1
    config = SlicingConfig()
    high = decide("auto", size, ground_sample_distance(120.0, wide.focal_px), 640, config)
    low = decide("auto", size, ground_sample_distance(30.0, wide.focal_px), 640, config)
    # a 0.5 m person: 0.5 / (120 m / f) native px, x 640 / 2566 in a full pass
    assert high.object_px == pytest.approx(0.5 * wide.focal_px / 120.0 * 640 / max(size))
    assert high.object_px < 8 < low.object_px
    assert high.sliced and high.slices == slice_count(size, config) == 20 and high.mode == "sliced"
    assert not low.sliced and low.slices == 0 and low.mode == "full"
    assert decide("always", size, ground_sample_distance(30.0, wide.focal_px), 640, config).sliced
    assert not decide("never", size, high.gsd_m, 640, config).sliced
    unknown = decide("auto", size, ground_sample_distance(None, wide.focal_px), 640, config)
    assert not unknown.sliced and unknown.gsd_m is None and unknown.object_px is None
    # the aligned 640x512 image is one slice already: nothing to gain
    assert not decide("auto", (640, 512), high.gsd_m * ratio, 640, config).sliced


def test_enlarged_slices_are_smaller_windows_whose_boxes_come_back_in_image_pixels():
    finder = SquareFinder()
    found = sliced_detect(finder, image_with_squares(), SlicingConfig(full_image_pass=False), zoom=2.0)
    # 320 px windows (640 / 2) overlapping 64 px: 8 across, 6 down, each given to the detector at 640 px
    assert len(finder.calls) == slice_count((2000, 1500), SlicingConfig(), 2.0) == 48
    assert set(finder.calls) <= {(640, 640), (640, 400), (400, 640), (400, 400)} and (640, 640) in finder.calls
    np.testing.assert_allclose(sorted(found.boxes.tolist()), expected_boxes(), atol=1.0)


def test_zoom_makes_the_smallest_object_span_object_px_detector_pixels():
    config = SlicingConfig(object_px=24)
    # 0.5 m at 0.04 m/px is 12.5 px: twice as large gives 25 >= 24; 0.02 m/px needs nothing; the cap holds
    assert slice_zoom(0.04, config) == pytest.approx(1.92)
    assert slice_zoom(0.02, config) == 1.0 and slice_zoom(0.5, config) == 4.0
    assert slice_zoom(0.04, SlicingConfig()) == 1.0 and slice_zoom(None, config) == 1.0
    decision = decide("always", (2563, 2055), 0.04, 640, config)
    assert decision.zoom == pytest.approx(1.92) and decision.slices == slice_count((2563, 2055), config, 1.92)


def thermal_scene() -> tuple[np.ndarray, list[tuple[int, int]]]:
    """A noisy 8-bit thermal image with a warm roof, a warm gradient and three 3 px people."""
    rng = np.random.default_rng(1)
    image = np.clip(rng.normal(90, 2, (512, 640)), 0, 255)
    image += np.linspace(0, 40, 640)[None, :]  # sunlit ground warming across the frame
    image[100:180, 300:420] += 60  # a roof: warm, but no spot
    people = [(50, 60), (400, 300), (610, 480)]
    for x, y in people:
        image[y - 1:y + 2, x - 1:x + 2] += 45
    return np.clip(image, 0, 255).astype(np.uint8), people


def test_warm_spots_are_the_small_warm_objects_not_roofs_or_sunlit_ground():
    image, people = thermal_scene()
    spots = warm_spots(image, 3.0, SlicingConfig())
    # pixel-edge coordinates, as boxes: the centre of pixel (x, y) is (x + 0.5, y + 0.5)
    np.testing.assert_allclose(sorted(spots.tolist()), sorted([x + 0.5, y + 0.5] for x, y in people), atol=1e-6)
    assert pixel_noise(image) == pytest.approx(2.0, rel=0.35)
    # the roof's corners are warm, but so is the rest of the ring around them; the people stand 45 grey
    # levels above theirs, which a threshold of 60 no longer takes
    assert len(warm_spots(image, 3.0, SlicingConfig(warm_spot_contrast=60))) == 0
    assert len(warm_spots(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), 3.0, SlicingConfig())) == 3


def test_spot_windows_cover_every_spot_once_and_stay_inside_the_image():
    points = np.array([[100.0, 100.0], [120.0, 110.0], [1990.0, 1490.0], [1000.0, 700.0], [1070.0, 700.0]])
    windows = spot_windows(points, (2000, 1500), 160)
    # (120, 110) lies well inside the first window; (1070, 700) is 70 px from the centre of its
    # neighbour's window, beyond its inner part (40 px margin), so it gets its own
    assert windows == [[20, 20, 180, 180], [920, 620, 1080, 780], [990, 620, 1150, 780], [1840, 1340, 2000, 1500]]
    for x, y in points:
        assert any(x0 <= x <= x1 and y0 <= y <= y1 for x0, y0, x1, y1 in windows)
    assert spot_windows(np.zeros((0, 2)), (2000, 1500), 160) == []
    # near a corner the image's own border needs no margin: one window for three spots, not three
    assert spot_windows(np.array([[1990.0, 1490.0], [1995.0, 1495.0], [1998.0, 1480.0]]), (2000, 1500), 160) == [
        [1840, 1340, 2000, 1500]]
    assert spot_windows(np.array([[5.0, 5.0], [10.0, 10.0]]), (2000, 1500), 160) == [[0, 0, 160, 160]]
    assert spot_windows(np.array([[-5.0, 10.0], [2100.0, 50.0]]), (2000, 1500), 160) == []  # outside the view


def test_warm_spot_windows_replace_the_grid_only_where_they_cost_less():
    config = SlicingConfig(windows="warm-spots")
    decision = decide("always", (2000, 1500), None, 640, config)  # 12 grid slices of 640 px
    few = np.array([[100.0, 100.0], [1500.0, 900.0]])
    assert cheaper_windows(few, (2000, 1500), decision, config) == [[0, 0, 320, 320], [1340, 740, 1660, 1060]]
    many = np.array([[x, y] for x in range(100, 2000, 200) for y in range(100, 1500, 200)], float)
    assert cheaper_windows(many, (2000, 1500), decision, config) is None  # 70 windows of 320 px: more than 12 of 640


def test_sliced_detection_on_windows_finds_what_they_hold_and_the_full_pass_the_rest():
    finder = SquareFinder()
    windows = [[50, 50, 250, 250]]
    found = sliced_detect(finder, image_with_squares(), SlicingConfig(), windows=windows, zoom=2.0)
    assert finder.calls == [(400, 400), (1500, 2000)]  # the window enlarged twice, then the whole image
    assert finder.sizes == [320, None]  # the window at the window size, the whole image at the detector's own
    np.testing.assert_allclose(sorted(found.boxes.tolist()), expected_boxes(), atol=1.0)
    alone = sliced_detect(SquareFinder(), image_with_squares(), SlicingConfig(full_image_pass=False), windows=windows,
                          zoom=2.0)
    assert alone.boxes.tolist() == [[100.0, 100.0, 140.0, 140.0]]
    nothing_warm = SquareFinder()
    assert len(sliced_detect(nothing_warm, image_with_squares(), SlicingConfig(full_image_pass=False), windows=[])) == 4
    assert nothing_warm.calls == [(1500, 2000)]  # no window: the whole image still gets its pass
