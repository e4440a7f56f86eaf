from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from ums.autolabel.slicing import SlicingConfig, decide, ground_sample_distance, slice_count, sliced_detect
from ums.camera import CameraProfile
from ums.detections import Detections


class SquareFinder:
    """A 'detector' that finds the bright squares of its input, in its input's pixels (cut ones too)."""

    taxonomy = "coco"

    def __init__(self):
        self.calls = []

    def detect(self, image: np.ndarray) -> Detections:
        self.calls.append(image.shape[:2])
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
    assert sorted(finder.calls[:12]) == [(640, 640)] * 12
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
