from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from tests.ums.autolabel.models import ROWS, TINY_SAM, tiny_sam_checkpoint, yolov7_end_to_end
from tests.conftest import aligned_workspace
from ums.autolabel.detectors import DetectorConfig
from ums.autolabel.sam import SamConfig
from ums.masks import decode_rle
from ums.autolabel.stage import AutolabelConfig, autolabel_workspace
from ums.cli import app
from ums.core.executors import ExecutorSettings
from ums.core.records import LabelRecord

QUIET = ExecutorSettings(show_progress=False)
IN_PROCESS = ExecutorSettings(workers=1, show_progress=False)  # where a monkeypatch is


@pytest.fixture()
def aligned(synthetic_flight, tmp_path):
    ws = aligned_workspace(synthetic_flight, tmp_path / "ws")
    yield ws
    ws.close()


@pytest.fixture()
def config(tmp_path):
    """The detector's fixed boxes are drawn for the aligned 640x512 image: these tests label that one."""
    return AutolabelConfig(
        detector=DetectorConfig(weights=yolov7_end_to_end(tmp_path / "yolov7.onnx", ROWS)),
        sam=SamConfig(checkpoint=tiny_sam_checkpoint(tmp_path / "sam.pth"), model_type="custom", architecture=TINY_SAM),
        visible_resolution="aligned")


def test_labels_from_both_modalities_with_masks_and_outputs(aligned, config):
    report = autolabel_workspace(aligned, config, QUIET)
    assert report.labelled == 4 and report.labels == 8 and report.per_class == {"car": 4, "person": 4}
    capture = aligned.captures()[0]
    labels = aligned.labels(capture.capture_id)
    car = next(label for label in labels if label.class_id == 2)
    np.testing.assert_allclose(car.box, [100, 100, 220, 160], atol=1e-3)
    assert car.provenance == {"visible": pytest.approx(0.9), "thermal": pytest.approx(0.9)}
    assert car.source == "auto" and not car.reviewed and car.model.startswith("yolov7.onnx@")
    assert decode_rle(car.mask).shape == (512, 640)
    result = aligned.stage_results(capture.capture_id)["autolabel"]
    assert result["detections"] == {"visible": 2, "thermal": 2} and result["merged"] == 2
    semantic = cv2.imread(str(aligned.absolute(result["files"]["semantic"])), cv2.IMREAD_UNCHANGED)
    assert semantic.shape == (512, 640) and set(np.unique(semantic)) <= {0, 1, 3}
    assert cv2.imread(str(aligned.absolute(result["files"]["preview"]))).shape == (512, 1280, 3)


def test_human_work_survives_reruns(aligned, config):
    autolabel_workspace(aligned, config, QUIET)
    capture = aligned.captures()[0].capture_id
    car = next(label for label in aligned.labels(capture) if label.class_id == 2)
    aligned.mark_label_reviewed(car.id)
    aligned.add_label(capture, LabelRecord(class_id=0, box=(400, 200, 430, 280), source="human"))  # over the person
    aligned.add_label(capture, LabelRecord(class_id=3, box=(10, 10, 40, 40), source="human"))
    assert autolabel_workspace(aligned, config, QUIET).skipped == 4  # labelled already: nothing changes
    assert len(aligned.labels(capture)) == 4
    forced = autolabel_workspace(aligned, config.model_copy(update={"force": True}), QUIET)
    assert forced.labelled == 4
    labels = aligned.labels(capture)
    # reviewed car and both human labels kept; the automatic person would repeat the human one
    assert sorted((l.source, l.reviewed, l.class_id) for l in labels) == [("auto", True, 2), ("human", False, 0),
                                                                           ("human", False, 3)]
    assert next(l for l in labels if l.class_id == 2).id == car.id


def test_a_relabelled_human_box_does_not_come_back_as_its_old_class(aligned, config):
    autolabel_workspace(aligned, config, QUIET)
    capture = aligned.captures()[0].capture_id
    car = next(label for label in aligned.labels(capture) if label.class_id == 2)
    # the reviewer says the "car" is a truck (UMS 3): a human label of another class on the same box
    aligned.add_label(capture, LabelRecord(class_id=3, box=car.box, source="human"))
    autolabel_workspace(aligned, config.model_copy(update={"force": True}), QUIET)
    classes = sorted((label.source, label.class_id) for label in aligned.labels(capture))
    assert classes == [("auto", 0), ("human", 3)]  # the automatic car is not added next to the human truck


def test_rerun_with_another_model_says_how_to_relabel(aligned, config, tmp_path):
    from tests.ums.autolabel.models import yolov7_end_to_end

    autolabel_workspace(aligned, config, QUIET)
    other = config.model_copy(update={"detector": config.detector.model_copy(
        update={"weights": yolov7_end_to_end(tmp_path / "other.onnx", ROWS[:1])})})
    report = autolabel_workspace(aligned, other, QUIET)
    assert report.skipped == 4 and report.done == 0
    [notice] = report.notices
    assert notice.startswith("4 pair(s) were labelled by yolov7.onnx@") and "other.onnx@" in notice and "--force" in notice


def test_boxes_only_and_clear_errors(aligned, config, tmp_path):
    report = autolabel_workspace(aligned, config.model_copy(update={"masks": False, "sam": SamConfig()}), QUIET)
    assert report.labels == 8 and all(label.mask is None for label in aligned.labels())
    runner = CliRunner()
    workspace = str(aligned.root)
    missing = runner.invoke(app, ["autolabel", "-w", workspace, "--no-progress"])
    assert missing.exit_code == 2 and "--detector" in missing.output
    no_sam = runner.invoke(app, ["autolabel", "-w", workspace, "--detector", str(config.detector.weights), "--no-progress"])
    assert no_sam.exit_code == 2 and "--sam" in no_sam.output and "--no-masks" in no_sam.output
    boxes_only = runner.invoke(app, ["autolabel", "-w", workspace, "--detector", str(config.detector.weights),
                                     "--no-masks", "--force", "--no-progress"])
    assert boxes_only.exit_code == 0 and "automatic labels written" in boxes_only.output


def test_a_pair_whose_labelling_raises_once_is_failed_and_the_rerun_retries_it(aligned, config, monkeypatch):
    from ums.autolabel import stage

    real_pair_images, calls = stage._pair_images, []

    def pair_images_out_of_memory_once(task):
        calls.append(task.key)
        if len(calls) == 2:
            raise MemoryError("cannot allocate")
        return real_pair_images(task)

    monkeypatch.setattr(stage, "_pair_images", pair_images_out_of_memory_once)
    report = autolabel_workspace(aligned, config, IN_PROCESS)
    assert (report.planned, report.done, report.failed, report.labels) == (4, 3, 1, 6)
    [issue] = report.issues
    assert issue.message == "autolabel failed: unexpected MemoryError: cannot allocate (rerun `ums autolabel` to retry)"
    assert aligned.labels(issue.capture_id) == []
    again = autolabel_workspace(aligned, config, IN_PROCESS)
    assert (again.done, again.skipped, again.failed, again.labels) == (1, 3, 0, 2)


def test_a_damaged_aligned_image_fails_its_pair_naming_align(aligned, config):
    capture = aligned.captures()[1].capture_id
    vis = aligned.absolute(aligned.stage_result(capture, "align")["files"]["vis"])
    vis.write_bytes(vis.read_bytes()[:500])
    report = autolabel_workspace(aligned, config, IN_PROCESS)
    assert (report.done, report.failed) == (3, 1)
    assert "run `ums align`" in report.issues[0].message and report.issues[0].capture_id == capture


# -- the visible frame at its own sampling, and slicing --------------------------------------------
@pytest.fixture()
def native(config):
    """Native visible detection, boxes only: the fixed detector's rows land on every slice."""
    return config.model_copy(update={"visible_resolution": "native", "masks": False, "sam": SamConfig()})


@pytest.mark.slow
def test_native_detection_slices_by_range_and_records_why(aligned, native):
    from ums.autolabel.slicing import SlicingConfig, slice_count

    report = autolabel_workspace(aligned, native, QUIET)
    assert report.labelled == 4
    for capture in aligned.captures():
        result = aligned.stage_result(capture.capture_id, "autolabel")
        crop = aligned.stage_result(capture.capture_id, "crop")
        x0, y0, x1, y1 = result["visible_region"]
        assert result["visible_resolution"] == "native" and 3.9 < (x1 - x0) / 640 < 4.1 and 3.9 < (y1 - y0) / 512 < 4.1
        focal = float(capture.frames["W"].xmp["CalibratedFocalLength"].value)
        assert result["gsd_m"]["visible"] == pytest.approx(crop["distance_m"] / focal, abs=1e-6)
        assert result["gsd_m"]["thermal"] / result["gsd_m"]["visible"] == pytest.approx((x1 - x0) / 640, rel=0.01)
        # 60-120 m: a 0.5 m person is 2.7-5.3 px once the ~2570 px view is shrunk to 640: sliced
        assert result["object_px"]["visible"] == pytest.approx(0.5 / result["gsd_m"]["visible"] * 640 / (x1 - x0),
                                                               abs=0.01)
        assert result["object_px"]["visible"] < 8 and result["slicing"] == {"visible": "sliced", "thermal": "full"}
        slices = slice_count((x1 - x0, y1 - y0), SlicingConfig())
        assert result["slices"] == {"visible": slices, "thermal": 0} and slices == 20
        # the fixed rows (a car, a person; the dog has no UMS class) on every slice, and on the full pass
        assert result["detections"] == {"visible": 2 * slices + 2, "thermal": 2}


@pytest.mark.slow
def test_warm_spot_windows_sit_on_the_warm_people_and_cost_fewer_passes_than_the_grid(aligned, native, synthetic_flight):
    import json

    from ums.autolabel import stage
    from ums.autolabel.native import boxes_from_grid, native_points
    from ums.autolabel.slicing import slice_zoom, spot_windows

    ran = CliRunner().invoke(app, ["autolabel", "-w", str(aligned.root), "--detector", str(native.detector.weights),
                                   "--no-masks", "--visible-resolution", "native", "--slice-windows", "warm-spots",
                                   "--object-px", "24", "--no-progress"])
    assert ran.exit_code == 0, ran.output
    truth = {Path(record["files"]["T"]).name: record
             for record in json.loads((synthetic_flight / "groundtruth.json").read_text())["captures"]}
    warm = native.model_copy(update={"slicing": native.slicing.model_copy(update={"windows": "warm-spots",
                                                                                   "object_px": 24})})
    people_in_windows, window_counts = 0, {}
    for task in stage.plan(aligned, warm):  # where the windows fall: on the people, in the native view
        thermal, visible = stage._pair_images(task)
        view = stage._visible_view(task, visible)
        spots = stage._warm_spot_finder(thermal, view.grid_gsd_m, warm)()
        side = round(warm.slicing.window_size / slice_zoom(view.gsd_m, warm.slicing))
        windows = spot_windows(native_points(spots, view.region, view.geometry), view.image.shape[1::-1], side)
        window_counts[task.key] = len(windows)
        record = truth[Path(task.file).name]
        for person in (o["box_thermal"] for o in record["objects"] if o["category"] == "person"):
            grid_box = np.array(person) + 0.5  # groundtruth.json: pixel (0, 0)'s centre at (0, 0)
            if not any(np.all(np.abs(spot - (grid_box[:2] + grid_box[2:]) / 2) <= 2) for spot in spots):
                continue  # not warm in this thermal image
            x0, y0, x1, y1 = boxes_from_grid(grid_box[None], view.region, view.geometry)[0]
            assert any(wx0 <= x0 and wy0 <= y0 and x1 <= wx1 and y1 <= wy1 for wx0, wy0, wx1, wy1 in windows)
            people_in_windows += 1
    assert people_in_windows >= 4
    for capture in aligned.captures():
        result = aligned.stage_result(capture.capture_id, "autolabel")
        windows = result["slices"]["visible"]
        people = sum(o["category"] == "person" for o in truth[Path(capture.frames["T"].path).name]["objects"])
        assert result["slicing"]["visible"] == "sliced" and result["slice_windows"] == {"visible": "warm-spots"}
        # about one window per person in view (two close ones share one), where the grid takes 20
        assert windows == window_counts[capture.capture_id] and 1 <= windows <= people + 1 and windows < 20
        assert result["zoom"]["visible"] == slice_zoom(result["gsd_m"]["visible"], warm.slicing) > 1
        # the fixed rows on each window and on the full pass; a window cut short by the view's border
        # letterboxes differently and can lose the person row outside it
        assert windows + 2 <= result["detections"]["visible"] <= 2 * windows + 2


@pytest.mark.slow
def test_native_full_pass_boxes_land_where_the_aligned_ones_do(aligned, config, native):
    # the detector letterboxes the native view as it does the aligned one, 4x smaller: the same rows
    # come back on the grid near the same places. Not exactly: the native view is the axis-aligned
    # box around the grid's footprint, which the rig's roll (0.3 deg) turns, so its letterbox frame
    # sits a few native pixels off the grid's (up to ~2 grid px at the corners)
    autolabel_workspace(aligned, config, QUIET)
    by_aligned = {c.capture_id: aligned.stage_result(c.capture_id, "autolabel") for c in aligned.captures()}
    autolabel_workspace(aligned, native.model_copy(update={"slice": "never", "force": True}), QUIET)
    for capture_id, before in by_aligned.items():
        after = aligned.stage_result(capture_id, "autolabel")
        assert after["slicing"] == {"visible": "full", "thermal": "full"} and after["slices"]["visible"] == 0
        np.testing.assert_allclose(np.array(after["per_modality"]["visible"])[:, :4],
                                   np.array(before["per_modality"]["visible"])[:, :4], atol=2.5)
        assert after["per_modality"]["thermal"] == before["per_modality"]["thermal"]


@pytest.mark.slow
def test_native_masks_come_back_on_the_grid(aligned, config, tmp_path):
    one_car = config.model_copy(update={
        "visible_resolution": "native", "slice": "never",
        "detector": config.detector.model_copy(update={"weights": yolov7_end_to_end(tmp_path / "car.onnx", ROWS[:1])})})
    report = autolabel_workspace(aligned, one_car, QUIET)
    assert report.labels == 4 and report.per_class == {"car": 4}
    for label in aligned.labels():
        assert decode_rle(label.mask).shape == (512, 640)
        np.testing.assert_allclose(label.box, [100, 100, 220, 160], atol=1.5)


@pytest.mark.slow
def test_a_forced_rerun_gives_the_same_labels_and_files(aligned, native):
    autolabel_workspace(aligned, native, QUIET)
    assert autolabel_workspace(aligned, native, QUIET).skipped == 4

    def state():
        rows = {}
        for capture in aligned.captures():
            result = aligned.stage_result(capture.capture_id, "autolabel")
            files = {key: aligned.absolute(path).read_bytes() for key, path in result["files"].items()}
            labels = [(l.class_id, l.box, l.score, l.provenance) for l in aligned.labels(capture.capture_id)]
            rows[capture.capture_id] = (result["per_modality"], result["slices"], files, labels)
        return rows

    first = state()
    autolabel_workspace(aligned, native.model_copy(update={"force": True}), QUIET)
    assert state() == first


@pytest.mark.slow
def test_an_upsampled_thermal_image_gives_grid_boxes_and_slices(aligned, native):
    autolabel_workspace(aligned, native.model_copy(update={"slice": "never"}), QUIET)
    capture = aligned.captures()[0].capture_id
    plain = aligned.stage_result(capture, "autolabel")["per_modality"]["thermal"]
    autolabel_workspace(aligned, native.model_copy(update={"slice": "never", "thermal_upsample": 2.0, "force": True}),
                        QUIET)
    # the detector letterboxes 1280x1024 at half the scale of 640x512: the same rows, scaled back
    np.testing.assert_allclose(aligned.stage_result(capture, "autolabel")["per_modality"]["thermal"], plain, atol=0.02)
    autolabel_workspace(aligned, native.model_copy(update={"thermal_upsample": 2.0, "force": True}), QUIET)
    result = aligned.stage_result(capture, "autolabel")
    # 1280x1024 in 640 px slices: 3 across, 2 down; a person is as small as on the 640 px grid
    assert result["slicing"]["thermal"] == "sliced" and result["slices"]["thermal"] == 6
    assert result["gsd_m"]["thermal"] == pytest.approx(plain_gsd := result["gsd_m"]["visible"] * 0.5 *
                                                       (result["visible_region"][2] - result["visible_region"][0]) / 640,
                                                       rel=0.01), plain_gsd


@pytest.mark.slow
def test_open_vocabulary_prompts_stay_with_their_labels(aligned, native, monkeypatch):
    from ums.autolabel import stage

    real_models = stage._models

    class Prompted:
        def __init__(self, detector):
            self.detector, self.taxonomy = detector, detector.taxonomy
            self.prompts = {0: "a person seen from above", 2: "a car", 16: "a dog"}  # the detector's own ids

        def detect(self, image, image_size=None):
            return self.detector.detect(image, image_size)

    def prompted_models(detector_config, sam_config):
        detector, predictor = real_models(detector_config, sam_config)
        return Prompted(detector), predictor

    monkeypatch.setattr(stage, "_models", prompted_models)
    autolabel_workspace(aligned, native.model_copy(update={"slice": "never"}), IN_PROCESS)
    prompts = {(label.class_id, label.prompt) for label in aligned.labels()}
    assert prompts == {(0, "a person seen from above"), (2, "a car")}
