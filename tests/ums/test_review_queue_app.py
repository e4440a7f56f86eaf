"""The review queue in the App: priority and reasons per group, evidence as label tags, candidate
misses as their own field, the "review first" view, and what --sync makes of them."""

from __future__ import annotations

from tests.conftest import aligned_workspace

import pytest

from tests.ums.conftest import slice_sample
from ums.core.records import LabelRecord
from ums.review import ALL_SLICES, REVIEW_FIRST, SLICES, build_review_dataset, sync_review

pytest.importorskip("fiftyone")

WARM = {"box": [300.0, 300.0, 340.0, 330.0], "contrast": 9.5, "area_m2": 2.1, "reason": "warm, unlabelled",
        "p_miss": 0.41}
DETECTED_CAR = {"box": [500.0, 50.0, 560.0, 90.0], "class": "car", "score": 0.3, "reason": "detected, unlabelled",
                "p_miss": 0.38}
ON_THE_CAR = {"box": [102.0, 101.0, 221.0, 160.0], "class": "car", "score": 0.2, "reason": "detected, unlabelled",
              "p_miss": 0.2}  # the labelled car itself: no miss to show
DETECTED_TRUCK = {"box": [400.0, 400.0, 480.0, 450.0], "class": "truck", "score": 0.6, "reason": "detected, unlabelled",
                  "p_miss": 0.5}


@pytest.fixture()
def queued_workspace(synthetic_flight, tmp_path):
    """Four captures: the first and second labelled and weighed, the third never weighed, the
    fourth weighed and already reviewed."""
    ws = aligned_workspace(synthetic_flight, tmp_path / "ws")
    first, second, third, fourth = (c.capture_id for c in ws.captures())
    ids = {
        "car": ws.add_label(first, LabelRecord(class_id=2, box=(100, 100, 220, 160), score=0.9,
                                               provenance={"visible": 0.9, "thermal": 0.8})),
        "person": ws.add_label(first, LabelRecord(class_id=0, box=(400, 200, 430, 280), score=0.3,
                                                  provenance={"thermal": 0.3})),
        "truck": ws.add_label(second, LabelRecord(class_id=5, box=(10, 10, 200, 100), score=0.8)),
    }
    ws.record_stage_result(first, "queue", "done", {
        "priority": 1.44, "reasons": ["person #2: one modality, low score", "warm, unlabelled at (300, 300)"],
        "labels": {str(ids["car"]): {"evidence": [], "p_error": 0.05},
                   str(ids["person"]): {"evidence": ["one modality", "low score"], "p_error": 0.4}},
        "candidates": [WARM, DETECTED_CAR, ON_THE_CAR]})
    ws.record_stage_result(second, "queue", "done", {
        "priority": 2.25, "reasons": ["truck #3: size unlike its class"],
        "labels": {str(ids["truck"]): {"evidence": ["size unlike its class"], "p_error": 0.9}},
        "candidates": [{**WARM, "p_miss": 0.85}, DETECTED_TRUCK]})
    ws.record_stage_result(fourth, "queue", "done", {"priority": 0.1, "reasons": [], "labels": {},
                                                     "candidates": [DETECTED_TRUCK]})
    ws.record_stage_result(fourth, "review", "done", {"tags": ["reviewed"]})
    yield ws, (first, second, third, fourth), ids
    ws.close()


def boxes_in_pixels(detections):
    return [[round(v * s, 2) for v, s in zip(d.bounding_box, (640, 512, 640, 512))] for d in detections]


def test_groups_carry_priority_evidence_candidates_and_the_review_first_view(queued_workspace):
    ws, (first, second, third, fourth), ids = queued_workspace
    dataset = build_review_dataset(ws)
    priorities = {capture: slice_sample(dataset, capture, "overlay")["review_priority"]
                  for capture in (first, second, third, fourth)}
    assert priorities == {first: 1.44, second: 2.25, third: 0.0, fourth: 0.1}
    assert all(slice_sample(dataset, first, name)["review_reasons"][0] == "person #2: one modality, low score"
               for name in ALL_SLICES)
    assert slice_sample(dataset, third, "visible")["review_reasons"] == []

    for name in SLICES:
        labels = {d["ums_label_id"]: d for d in slice_sample(dataset, first, name)["detections"].detections}
        assert labels[ids["person"]].tags == ["evidence:one modality", "evidence:low score"]
        assert labels[ids["person"]]["p_error"] == 0.4
        assert labels[ids["car"]].tags == [] and labels[ids["car"]]["p_error"] == 0.05
        candidates = slice_sample(dataset, first, name)["candidates"].detections
        assert [c.label for c in candidates] == ["missed?", "car"]  # the one on the labelled car is left out
        assert boxes_in_pixels(candidates) == [[300, 300, 40, 30], [500, 50, 60, 40]]
        assert [c.tags for c in candidates] == [["candidate:warm, unlabelled"], ["candidate:detected, unlabelled"]]
        assert [(c["p_miss"], c["reason"]) for c in candidates] == [(0.41, "warm, unlabelled"),
                                                                   (0.38, "detected, unlabelled")]
        assert (candidates[0]["contrast"], candidates[1]["score"]) == (9.5, 0.3)
    assert slice_sample(dataset, fourth, "visible")["candidates"].detections == []  # reviewed: settled
    assert slice_sample(dataset, first, "overlay")["candidates"] is None  # the overlay has no boxes

    view = dataset.load_saved_view(REVIEW_FIRST)
    assert view.media_type == "group" and view.group_slice == "visible"
    assert [(s["capture_id"], s["review_priority"]) for s in view] == [(second, 2.25), (first, 1.44), (third, 0.0)]
    assert len(view.select_group_slices()) == 9  # whole groups: three slices each


def test_sync_accepts_relabelled_and_kept_candidates_and_forgets_deleted_ones(queued_workspace):
    ws, (first, second, third, fourth), ids = queued_workspace
    dataset = build_review_dataset(ws)
    visible = slice_sample(dataset, first, "visible")
    visible.tags.append("reviewed")
    visible["candidates"].detections[0].label = "person"  # the warm region is a person
    visible["detections"].detections = [d for d in visible["detections"].detections if d["ums_label_id"] != ids["person"]]
    car = next(d for d in visible["detections"].detections if d["ums_label_id"] == ids["car"])
    car.bounding_box = [110 / 640, 100 / 512, 120 / 640, 60 / 512]
    visible.save()
    infrared = slice_sample(dataset, first, "infrared")
    infrared["candidates"].detections = infrared["candidates"].detections[:1]  # the detected car is not there
    infrared.save()
    for name in SLICES:  # not reviewed: the kept truck candidate waits, the relabelled warm one is taken
        sample = slice_sample(dataset, second, name)
        sample["candidates"].detections[0].label = "bicycle"
        next(d for d in sample["detections"].detections if d["ums_label_id"] == ids["truck"]).tags.append("wrong")
        sample.save()
    overlay = slice_sample(dataset, third, "overlay")
    overlay.tags.append("reviewed")
    overlay.save()

    report = sync_review(ws)
    assert (report.edited, report.deleted, report.added, report.conflicts) == (1, 1, 0, 0)
    assert (report.queued_reviewed, report.queued_changed, report.flagged_changed) == (1, 2, 1)
    assert (report.candidates_accepted, report.candidates_dismissed) == (2, 1)
    rows = dict(report.rows())
    assert (rows["queued captures reviewed now"], rows["candidates accepted as labels"]) == (1, 2)
    person = next(label for label in ws.labels(first) if label.class_id == 0 and label.id != ids["person"])
    assert (person.source, person.reviewed, person.box, person.tags) == ("human", True, (300, 300, 340, 330), [])
    bicycle = next(label for label in ws.labels(second) if label.class_id == 1)
    assert bicycle.source == "human" and bicycle.box == pytest.approx((300, 300, 340, 330))
    assert next(label for label in ws.labels(second) if label.id == ids["truck"]).tags == ["wrong"]
    assert not any(tag.startswith(("evidence:", "candidate:")) for label in ws.labels() for tag in label.tags)
    assert len(ws.labels(first)) == 3 and len(ws.labels(second)) == 2  # nothing recorded for the deleted car

    for name in SLICES:
        assert slice_sample(dataset, first, name)["candidates"].detections == []
        assert not slice_sample(dataset, first, name)["ums_candidate_ids"]  # FiftyOne stores [] as None
        assert [c.label for c in slice_sample(dataset, second, name)["candidates"].detections] == ["truck"]
        truck = slice_sample(dataset, second, name)["detections"].detections[0]
        assert truck.tags == ["wrong", "evidence:size unlike its class"]  # the queue's tags stay the App's
    assert [slice_sample(dataset, third, name).tags for name in ALL_SLICES] == [["reviewed"]] * 3

    again = sync_review(ws)
    assert (again.edited, again.deleted, again.added, again.conflicts, again.queued_reviewed, again.queued_changed,
            again.candidates_accepted, again.candidates_dismissed) == (0, 0, 0, 0, 0, 0, 0, 0)
    assert len(ws.labels(first)) == 3 and len(ws.labels(second)) == 2

    rebuilt = build_review_dataset(ws)  # the accepted warm region is a label now, not a candidate
    assert [c.label for c in slice_sample(rebuilt, second, "visible")["candidates"].detections] == ["truck"]
    assert [s["capture_id"] for s in rebuilt.load_saved_view(REVIEW_FIRST)] == [second]


def test_a_candidate_changed_differently_on_the_two_slices_is_a_conflict(queued_workspace):
    ws, (first, second, third, fourth), ids = queued_workspace
    dataset = build_review_dataset(ws)
    for name, class_name in zip(SLICES, ("person", "car")):
        sample = slice_sample(dataset, first, name)
        sample["candidates"].detections[0].label = class_name
        sample.tags.append("reviewed")
        sample.save()
    report = sync_review(ws)
    assert (report.conflicts, report.candidates_accepted) == (1, 1)  # the detected car, kept in a reviewed group
    assert report.issues[0].message == ("candidate 0: changed differently on the infrared and visible slices; "
                                        "not applied (resolve it in the App or the workspace)")
    assert [label.class_id for label in ws.labels(first)] == [2, 0, 2]
    assert slice_sample(dataset, first, "visible")["ums_candidate_ids"] == [0]  # still open


def test_review_first_follows_the_stored_queue(synthetic_flight, tmp_path):
    from ums.core.executors import ExecutorSettings
    from ums.queue import QueueConfig, queue_workspace

    ws = aligned_workspace(synthetic_flight, tmp_path / "ws")
    first = ws.captures()[0].capture_id
    ws.add_label(first, LabelRecord(class_id=0, box=(5, 500, 9, 504), score=0.55, provenance={"visible": 0.55}))
    queue_workspace(ws, QueueConfig(), ExecutorSettings(show_progress=False, workers=1))
    dataset = build_review_dataset(ws)
    stored = {c.capture_id: r["priority"] for c, r in ws.captures_with("queue")}
    view = dataset.load_saved_view(REVIEW_FIRST)
    assert [s["review_priority"] for s in view] == sorted(stored.values(), reverse=True)
    assert {s["capture_id"]: s["review_priority"] for s in view} == stored
    label = ws.labels(first)[0]
    detection = slice_sample(dataset, first, "visible")["detections"].detections[0]
    evidence = ws.stage_result(first, "queue")["labels"][str(label.id)]["evidence"]
    assert evidence  # a 4 px person only the visible camera saw
    assert detection.tags == ["evidence:" + name for name in evidence]
    ws.close()
