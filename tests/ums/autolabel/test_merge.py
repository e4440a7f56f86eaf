from __future__ import annotations


import numpy as np
import pytest

from tests.conftest import shared_data
from ums.detections import Detections, box_iou
from ums.detection_metrics import coco_map
from ums.autolabel.merge import MergeConfig, merge_modalities
from ums.taxonomy import load_mapping, load_taxonomy


def dets(boxes, scores, classes, taxonomy="ums"):
    return Detections(np.array(boxes, float), np.array(scores, float), np.array(classes), taxonomy)


def test_overlapping_boxes_fuse_and_keep_their_provenance():
    visible = dets([[10, 10, 50, 90], [200, 50, 260, 80]], [0.9, 0.6], [0, 2])
    thermal = dets([[12, 12, 52, 92], [400, 300, 420, 340]], [0.7, 0.8], [0, 0])
    merged = merge_modalities({"visible": visible, "thermal": thermal}, 640, 512)
    assert len(merged) == 3
    person = int(np.argmax(merged.scores))
    np.testing.assert_allclose(merged.boxes[person], [10 + 2 * 0.7 / 1.6, 10 + 2 * 0.7 / 1.6, 50 + 2 * 0.7 / 1.6,
                                                      90 + 2 * 0.7 / 1.6], atol=0.05)  # score-weighted mean
    assert merged.scores[person] == pytest.approx(0.9)  # score_rule "max"
    assert merged.provenance[person] == {"visible": pytest.approx(0.9), "thermal": pytest.approx(0.7)}
    only_thermal = [p for p in merged.provenance if set(p) == {"thermal"}]
    assert only_thermal == [{"thermal": pytest.approx(0.8)}]  # seen in the dark by one camera, kept whole


def test_classes_never_fuse_across_labels_and_nms_alternative():
    visible = dets([[10, 10, 50, 90]], [0.9], [0])
    thermal = dets([[10, 10, 50, 90]], [0.8], [2])
    assert len(merge_modalities({"visible": visible, "thermal": thermal}, 640, 512)) == 2
    nms = merge_modalities({"visible": visible, "thermal": dets([[11, 10, 51, 90]], [0.8], [0])}, 640, 512,
                           MergeConfig(method="nms"))
    assert len(nms) == 1 and nms.scores[0] == pytest.approx(0.9) and set(nms.provenance[0]) == {"visible", "thermal"}


def test_empty_and_mixed_taxonomies():
    assert len(merge_modalities({"visible": Detections.empty("ums"), "thermal": Detections.empty("ums")}, 10, 10)) == 0
    with pytest.raises(ValueError, match="one taxonomy"):
        merge_modalities({"visible": dets([[0, 0, 1, 1]], [1], [0], "coco"), "thermal": dets([[0, 0, 1, 1]], [1], [0])}, 10, 10)


def test_class_mapping_drops_what_has_no_counterpart():
    coco = dets([[0, 0, 5, 5], [1, 1, 6, 6], [2, 2, 7, 7]], [0.9, 0.8, 0.7], [0, 16, 7], "coco")
    mapped = coco.mapped(load_mapping("coco", "ums"))
    assert mapped.taxonomy == "ums" and mapped.classes.tolist() == [0, 5] and mapped.scores.tolist() == pytest.approx([0.9, 0.7])


def test_yolo_label_files(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("0 0.5 0.5 0.25 0.5\n2 0.1 0.2 0.1 0.2")  # no final newline
    labels = Detections.from_yolo_txt(path, 640, 480, "msrs-det")
    np.testing.assert_allclose(labels.boxes[0], [240, 120, 400, 360])
    empty = tmp_path / "b.txt"
    empty.write_text("")
    assert len(Detections.from_yolo_txt(empty, 640, 480, "msrs-det")) == 0


def test_box_iou():
    a = np.array([[0, 0, 10, 10]], float)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], float)
    np.testing.assert_allclose(box_iou(a, b), [[1.0, 1 / 3, 0.0]], atol=1e-6)


def test_coco_map_is_one_on_the_truth_and_drops_with_noise():
    rng = np.random.default_rng(0)
    corners = [rng.uniform(0, 300, (5, 2)) for _ in range(10)]
    truth = {str(i): dets(np.hstack([xy, xy + [40, 60]]), np.ones(5), rng.integers(0, 3, 5)) for i, xy in enumerate(corners)}
    names = {0: "person", 1: "bicycle", 2: "car"}
    assert coco_map(truth, truth, names)["AP50"] == pytest.approx(1.0)
    shifted = {k: dets(v.boxes + 25, v.scores, v.classes) for k, v in truth.items()}
    assert coco_map(shifted, truth, names)["AP50"] < 0.2


def msrs_label_sets():
    root = shared_data("msrs", "labels_det_yolo_all_test361")
    ids = sorted(set.intersection(*({p.stem for p in (root / view).glob("*.txt")} for view in ("infrared", "visible", "fusion"))))
    load = lambda view: {i: Detections.from_yolo_txt(root / view / f"{i}.txt", 640, 480, "msrs-det") for i in ids}  # noqa: E731
    return load("infrared"), load("visible"), load("fusion")


def test_merging_real_ir_and_visible_labels_approaches_the_fused_labels():
    """MSRS boxes were drawn separately on the IR, visible and fused views: merging the IR and
    visible sets must match the fused set better than either alone (COCO AP@0.5, pycocotools)."""
    infrared, visible, fused = msrs_label_sets()
    assert len(fused) > 300
    names = load_taxonomy("msrs-det").names
    alone = max(coco_map(infrared, fused, names)["AP50"], coco_map(visible, fused, names)["AP50"])
    merged = {i: merge_modalities({"visible": visible[i], "thermal": infrared[i]}, 640, 480) for i in fused}
    together = coco_map(merged, fused, names)
    assert together["AP50"] > alone + 0.04, (together, alone)
