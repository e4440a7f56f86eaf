from __future__ import annotations

from tests.ums.autolabel.models import ROWS
from tests.conftest import aligned_workspace


import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from tests.ums.autolabel.models import TINY_SAM, tiny_sam_checkpoint, yolov7_end_to_end
from ums.autolabel.detectors import DetectorConfig
from ums.autolabel.sam import SamConfig
from ums.masks import decode_rle
from ums.autolabel.stage import AutolabelConfig, autolabel_workspace
from ums.cli import app
from ums.core.records import LabelRecord



@pytest.fixture()
def aligned(synthetic_flight, tmp_path):
    ws = aligned_workspace(synthetic_flight, tmp_path / "ws")
    yield ws
    ws.close()


@pytest.fixture()
def config(tmp_path):
    return AutolabelConfig(
        detector=DetectorConfig(weights=yolov7_end_to_end(tmp_path / "yolov7.onnx", ROWS)),
        sam=SamConfig(checkpoint=tiny_sam_checkpoint(tmp_path / "sam.pth"), model_type="custom", architecture=TINY_SAM),
        show_progress=False)


def test_labels_from_both_modalities_with_masks_and_outputs(aligned, config):
    report = autolabel_workspace(aligned, config)
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
    autolabel_workspace(aligned, config)
    capture = aligned.captures()[0].capture_id
    car = next(label for label in aligned.labels(capture) if label.class_id == 2)
    aligned.mark_label_reviewed(car.id)
    aligned.add_label(capture, LabelRecord(class_id=0, box=(400, 200, 430, 280), source="human"))  # over the person
    aligned.add_label(capture, LabelRecord(class_id=3, box=(10, 10, 40, 40), source="human"))
    assert autolabel_workspace(aligned, config).skipped == 4  # labelled already: nothing changes
    assert len(aligned.labels(capture)) == 4
    forced = autolabel_workspace(aligned, config.model_copy(update={"force": True}))
    assert forced.labelled == 4
    labels = aligned.labels(capture)
    # reviewed car and both human labels kept; the automatic person would repeat the human one
    assert sorted((l.source, l.reviewed, l.class_id) for l in labels) == [("auto", True, 2), ("human", False, 0),
                                                                           ("human", False, 3)]
    assert next(l for l in labels if l.class_id == 2).id == car.id


def test_a_relabelled_human_box_does_not_come_back_as_its_old_class(aligned, config):
    autolabel_workspace(aligned, config)
    capture = aligned.captures()[0].capture_id
    car = next(label for label in aligned.labels(capture) if label.class_id == 2)
    # the reviewer says the "car" is a truck (UMS 3): a human label of another class on the same box
    aligned.add_label(capture, LabelRecord(class_id=3, box=car.box, source="human"))
    autolabel_workspace(aligned, config.model_copy(update={"force": True}))
    classes = sorted((label.source, label.class_id) for label in aligned.labels(capture))
    assert classes == [("auto", 0), ("human", 3)]  # the automatic car is not added next to the human truck


def test_rerun_with_another_model_says_how_to_relabel(aligned, config, tmp_path):
    from tests.ums.autolabel.models import yolov7_end_to_end

    autolabel_workspace(aligned, config)
    other = config.model_copy(update={"detector": config.detector.model_copy(
        update={"weights": yolov7_end_to_end(tmp_path / "other.onnx", ROWS[:1])})})
    report = autolabel_workspace(aligned, other)
    assert report.skipped == 4 and report.done == 0
    [notice] = report.notices
    assert notice.startswith("4 pair(s) were labelled by yolov7.onnx@") and "other.onnx@" in notice and "--force" in notice


def test_boxes_only_and_clear_errors(aligned, config, tmp_path):
    report = autolabel_workspace(aligned, config.model_copy(update={"masks": False, "sam": SamConfig()}))
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
    in_process = config.model_copy(update={"workers": 1})  # where the patch is
    report = autolabel_workspace(aligned, in_process)
    assert (report.planned, report.done, report.failed, report.labels) == (4, 3, 1, 6)
    [issue] = report.issues
    assert issue.message == "autolabel failed: unexpected MemoryError: cannot allocate (rerun `ums autolabel` to retry)"
    assert aligned.labels(issue.capture_id) == []
    again = autolabel_workspace(aligned, in_process)
    assert (again.done, again.skipped, again.failed, again.labels) == (1, 3, 0, 2)


def test_a_damaged_aligned_image_fails_its_pair_naming_align(aligned, config):
    capture = aligned.captures()[1].capture_id
    vis = aligned.absolute(aligned.stage_result(capture, "align")["files"]["vis"])
    vis.write_bytes(vis.read_bytes()[:500])
    report = autolabel_workspace(aligned, config.model_copy(update={"workers": 1}))
    assert (report.done, report.failed) == (3, 1)
    assert "run `ums align`" in report.issues[0].message and report.issues[0].capture_id == capture
