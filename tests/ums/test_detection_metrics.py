from __future__ import annotations

import numpy as np
import pytest

from ums.detection_metrics import (
    IOU_30_OR_CENTRE_2,
    IOU_50,
    average_precision,
    coco_map,
    longer_side,
    match_image,
    scores_by_size,
)
from ums.detections import Detections

PERSON, CAR = 0, 2


def dets(boxes, scores, classes) -> Detections:
    return Detections(np.array(boxes, float).reshape(-1, 4), np.array(scores, float), np.array(classes), "ums")


def scene() -> tuple[dict[str, Detections], dict[str, Detections]]:
    """Image a: a 3 px person found one pixel off, a 20 px person found exactly, a car found, one
    false 10 px person; image b: a 5 px person nobody found."""
    truth = {
        "a": dets([[10, 10, 13, 13], [100, 100, 140, 120], [200, 200, 210, 220]], [1, 1, 1], [PERSON, CAR, PERSON]),
        "b": dets([[50, 50, 55, 55]], [1], [PERSON]),
    }
    predictions = {
        "a": dets([[101, 100, 141, 120], [11, 11, 14, 14], [300, 300, 310, 310], [200, 200, 210, 220]],
                  [0.9, 0.8, 0.7, 0.6], [CAR, PERSON, PERSON, PERSON]),
    }
    return predictions, truth


def test_a_box_one_pixel_off_a_tiny_object_matches_only_by_its_centre():
    truth = dets([[10, 10, 13, 13]], [1], [PERSON])
    off = dets([[11, 11, 14, 14]], [0.8], [PERSON])  # IoU 4/14 = 0.29, centres 1.41 px apart
    assert match_image(off, truth, IOU_50).tolist() == [-1]
    assert match_image(off, truth, IOU_30_OR_CENTRE_2).tolist() == [0]
    far = dets([[12.5, 10, 15.5, 13]], [0.8], [PERSON])  # IoU 0.09, centres 2.5 px apart
    assert match_image(far, truth, IOU_30_OR_CENTRE_2).tolist() == [-1]


def test_matching_is_by_score_one_truth_each_same_class_and_best_iou_first():
    truth = dets([[0, 0, 4, 4], [2, 0, 6, 4]], [1, 1], [PERSON, PERSON])
    # the first box overlaps both truths (IoU 0.45 and 0.78): it takes the better one, not the first
    predictions = dets([[1.5, 0, 5.5, 4], [0, 0, 4, 4], [2, 0, 6, 4], [0, 0, 4, 4]], [0.9, 0.5, 0.4, 0.95],
                       [PERSON, PERSON, PERSON, CAR])
    assert match_image(predictions, truth, IOU_30_OR_CENTRE_2).tolist() == [1, 0, -1, -1]
    assert match_image(Detections.empty("ums"), truth, IOU_50).tolist() == []
    assert match_image(predictions, Detections.empty("ums"), IOU_50).tolist() == [-1, -1, -1, -1]


def test_average_precision_interpolates_at_101_recall_points():
    # recall 1/3, 1/3, 2/3 with precision 1, 1/2, 2/3: 34 thresholds at 1, 33 at 2/3, the rest 0
    assert average_precision([(0.8, True), (0.7, False), (0.6, True)], 3) == pytest.approx(56 / 101)
    assert average_precision([(0.9, True)], 1) == 1.0
    assert average_precision([], 4) == 0.0
    assert average_precision([(0.5, False), (0.9, True)], 2) == pytest.approx(51 / 101)  # sorted by score


def test_scores_by_size_with_iou_50_agree_with_cocoeval():
    predictions, truth = scene()
    scores = scores_by_size(predictions, truth, IOU_50)
    # person: FP, FP, TP of 3 -> 34 thresholds at 1/3; car: 1.0
    assert scores["all"].ap == pytest.approx((34 / 3 / 101 + 1.0) / 2)
    assert scores["all"].ap == pytest.approx(coco_map(predictions, truth, {PERSON: "person", CAR: "car"})["AP50"])
    assert (scores["all"].found, scores["all"].truth, scores["all"].recall) == (2, 4, 0.5)
    assert (scores["<8px"].ap, scores["<8px"].recall, scores["<8px"].truth) == (0.0, 0.0, 2)


def test_scores_by_size_with_the_centre_rule_and_per_size_bins():
    predictions, truth = scene()
    scores = scores_by_size(predictions, truth, IOU_30_OR_CENTRE_2)
    assert scores["all"].ap == pytest.approx((56 / 101 + 1.0) / 2)
    assert scores["all"].recall == 0.75
    # < 8 px: the 3 px person (found) and the 5 px one (missed); the 10 px false box and the boxes
    # matched to larger truth count in other bins only, as in COCOeval's area ranges
    small = scores["<8px"]
    assert (small.found, small.truth, small.recall) == (1, 2, 0.5)
    assert small.ap == pytest.approx(51 / 101)
    middle = scores["8-32px"]  # the false 10 px person ranks above the found 20 px one
    assert (middle.ap, middle.recall) == (pytest.approx(0.5), 1.0)
    assert (scores[">=32px"].ap, scores[">=32px"].recall) == (1.0, 1.0)


def test_a_size_without_truth_has_no_score_and_sizes_are_the_longer_side():
    truth = {"a": dets([[0, 0, 40, 10]], [1], [CAR])}
    scores = scores_by_size({"a": dets([[0, 0, 40, 10]], [0.9], [CAR])}, truth, IOU_50)
    assert scores["<8px"].ap is None and scores["<8px"].recall is None and scores["<8px"].truth == 0
    assert scores[">=32px"].ap == 1.0
    assert longer_side(np.array([[0, 0, 40, 10], [5, 5, 8, 12]])).tolist() == [40.0, 7.0]
