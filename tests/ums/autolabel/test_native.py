"""Native-resolution visible detection: the map between the source frame and the aligned grid,
checked against a synthetic flight's truth, and the pieces built on it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ums.align.flow import flow_from_transform
from ums.autolabel.native import (
    GridToVisible,
    NativeRegion,
    boxes_from_grid,
    boxes_to_grid,
    grid_maps,
    masks_to_grid,
    native_image,
    native_region,
)
from ums.autolabel.stage import grid_geometry
from ums.camera import apply_homography
from ums.core.records import CropResult
from ums.core.stage_names import ALIGN, CROP
from tests.conftest import aligned_workspace

# ECC's residual on these flights is ~0.3 px per frame (docs/reference/registration.md): the truth
# is met to within a pixel, corners and boxes alike
TRUTH_TOLERANCE_PX = 1.0


@pytest.fixture(scope="module")
def truth_workspace(synthetic_flight, tmp_path_factory):
    workspace = aligned_workspace(synthetic_flight, tmp_path_factory.mktemp("native") / "ws")
    truth = json.loads((synthetic_flight / "groundtruth.json").read_text())
    yield workspace, truth
    workspace.close()


def geometries(workspace):
    """Per capture: the geometry autolabel uses, crop's result and the capture's sequence number."""
    for capture, align in workspace.captures_with(ALIGN):
        crop = CropResult.model_validate(workspace.stage_result(capture.capture_id, CROP))
        geometry = grid_geometry(crop, align.get("transform"), align.get("flow"), workspace.root, tuple(crop.output_size))
        yield capture.sequence, geometry, crop


def on_grid(crop: CropResult, thermal_points) -> np.ndarray:
    """Raw thermal pixels -> the aligned (output) grid."""
    return apply_homography(np.linalg.inv(np.asarray(crop.output_to_thermal)), np.asarray(thermal_points, float))


@pytest.mark.slow
def test_wide_frame_points_land_on_their_thermal_truth(truth_workspace):
    workspace, truth = truth_workspace
    by_sequence = {record["sequence"]: record for record in truth["captures"]}
    errors = []
    for sequence, geometry, crop in geometries(workspace):
        for thing in by_sequence[sequence]["objects"]:
            mapped = geometry.inverse(np.array(thing["polygon_wide"]))
            errors.append(np.linalg.norm(mapped - on_grid(crop, thing["polygon_thermal"]), axis=1))
            back = geometry.forward(mapped)
            np.testing.assert_allclose(back, thing["polygon_wide"], atol=1e-6)  # the two ways are inverses
    errors = np.concatenate(errors)
    assert len(errors) > 40
    assert errors.max() < TRUTH_TOLERANCE_PX and errors.mean() < 0.5


@pytest.mark.slow
def test_native_boxes_land_on_their_thermal_truth_boxes(truth_workspace):
    workspace, truth = truth_workspace
    by_sequence = {record["sequence"]: record for record in truth["captures"]}
    checked = 0
    for sequence, geometry, crop in geometries(workspace):
        frame = workspace.captures()[0].frames["W"]
        region = native_region(geometry, (frame.width, frame.height))
        # the grid's footprint is ~4 wide pixels per thermal pixel, within the 4000x3000 frame
        assert 3.9 < region.size[0] / 640 < 4.1 and 3.9 < region.size[1] / 512 < 4.1
        for thing in by_sequence[sequence]["objects"]:
            box_thermal = np.array(thing["box_thermal"])
            if box_thermal[0] <= -0.5 or box_thermal[1] <= -0.5 or box_thermal[2] >= 639.5 or box_thermal[3] >= 511.5:
                continue  # cut by the grid's border: truth clips the polygon, the detector sees a box
            # the truth's box spans pixel centres; a detector's box spans pixel edges (+0.5)
            native_box = np.array(thing["box_wide"]) + 0.5 - np.tile(region.origin, 2)
            boxes, kept = boxes_to_grid(native_box[None], region, geometry)
            assert kept.tolist() == [0]
            expected = np.concatenate([on_grid(crop, [box_thermal[:2]])[0], on_grid(crop, [box_thermal[2:]])[0]])
            # truth boxes the mapped polygon, we box the mapped box: the rig's 0.3 deg roll widens ours
            # by up to sin(0.3 deg) x the object's size (a car of 37 px: 0.2 px)
            np.testing.assert_allclose(boxes[0] - 0.5, expected, atol=TRUTH_TOLERANCE_PX)
            checked += 1
    assert checked > 20


def test_a_flow_maps_as_the_transform_it_was_made_from():
    crop_to_visible = np.array([[4.01, 0.02, 720.0], [-0.02, 4.0, 480.0], [0, 0, 1.0]])
    transform = np.array([[1.001, -0.003, 2.5], [0.003, 1.001, -1.25], [0, 0, 1.0]])
    by_transform = GridToVisible(crop_to_visible, (640, 512), transform=transform)
    by_flow = GridToVisible(crop_to_visible, (640, 512), flow=flow_from_transform(transform, 512, 640))
    points = np.array([[0.0, 0.0], [100.3, 200.7], [639.0, 511.0], [320.5, 255.5]])
    np.testing.assert_allclose(by_flow.forward(points), by_transform.forward(points), atol=1e-3)
    visible = by_transform.forward(points)
    np.testing.assert_allclose(by_flow.inverse(visible), points, atol=1e-4)
    region = native_region(by_transform, (4000, 3000))
    assert native_region(by_flow, (4000, 3000)) == region
    box = np.array([[400.0, 300.0, 460.0, 330.0]])
    np.testing.assert_allclose(boxes_to_grid(box, region, by_flow)[0], boxes_to_grid(box, region, by_transform)[0],
                               atol=1e-3)


def test_boxes_go_to_the_grid_and_back_and_off_grid_boxes_are_dropped():
    scale = np.array([[4.0, 0, 100.0], [0, 4.0, 50.0], [0, 0, 1.0]])
    geometry = GridToVisible(scale, (640, 512), transform=np.eye(3))
    region = native_region(geometry, (4000, 3000))
    # grid edges -0.5..639.5 -> visible coordinates 98..2658: pixels 98..2658 reach into it
    assert region == NativeRegion(98, 48, 2659, 2097)
    grid_box = np.array([[10.0, 20.0, 30.0, 25.0]])
    native = boxes_from_grid(grid_box, region, geometry)
    # a grid pixel's edge at e: visible centre 4 (e - 0.5) + 100, its edge + 0.5, less the origin
    np.testing.assert_allclose(native, [[4 * 9.5 + 100.5 - 98, 4 * 19.5 + 50.5 - 48, 4 * 29.5 + 100.5 - 98,
                                          4 * 24.5 + 50.5 - 48]])
    boxes, kept = boxes_to_grid(np.vstack([native, [[-900.0, -900.0, -800.0, -800.0]]]), region, geometry)
    assert kept.tolist() == [0]
    np.testing.assert_allclose(boxes, grid_box, atol=1e-9)


def test_native_image_is_the_frame_itself_without_distortion_and_undistorted_with_it():
    decoded = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    region = NativeRegion(50, 40, 250, 200)
    assert np.array_equal(native_image(decoded, region), decoded[40:200, 50:250])
    K = np.array([[300.0, 0, 199.5], [0, 300.0, 149.5], [0, 0, 1]])
    assert np.array_equal(native_image(decoded, region, K, np.zeros(5)), decoded[40:200, 50:250])
    barrel = native_image(decoded, region, K, np.array([-0.2, 0, 0, 0, 0]))
    assert barrel.shape == (160, 200, 3)
    # the principal point is where distortion moves nothing
    assert np.array_equal(barrel[149 - 40, 199 - 50 + 1], decoded[149, 200])


def test_native_masks_warp_onto_the_grid_by_area():
    geometry = GridToVisible(np.array([[4.0, 0, 1.5], [0, 4.0, 1.5], [0, 0, 1]]), (64, 48), transform=np.eye(3))
    region = native_region(geometry, (400, 300))
    assert region == NativeRegion(0, 0, 256, 192)
    mask = np.zeros((1, 192, 256), bool)
    mask[0, 40:80, 100:160] = True  # grid pixels 10..19 down, 25..39 across
    grid = masks_to_grid(mask, grid_maps(region, geometry), geometry.scale())
    assert grid.shape == (1, 48, 64)
    rows, columns = np.nonzero(grid[0])
    assert (rows.min(), rows.max(), columns.min(), columns.max()) == (10, 19, 25, 39)
    assert grid[0].sum() == 10 * 15
