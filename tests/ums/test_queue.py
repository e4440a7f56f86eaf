"""The review queue on a small workspace whose labels hold planted errors."""

from __future__ import annotations

import json

import pytest

from tests.conftest import aligned_workspace
from ums.core.executors import ExecutorSettings
from ums.queue import DETECTED_UNLABELLED, PriorityModel, queue_workspace
from ums.queue_order import review_order
from ums.core.records import LabelRecord

QUIET = ExecutorSettings(show_progress=False, workers=1)
CLASS_IDS = {"person": 0, "car": 2}


@pytest.fixture()
def labelled(synthetic_flight, tmp_path):
    """Every capture labelled from its truth, seen by both modalities; then capture 2 spoiled."""
    ws = aligned_workspace(synthetic_flight, tmp_path / "ws")
    truth = json.loads((synthetic_flight / "groundtruth.json").read_text())["captures"]
    for capture, capture_truth in zip(ws.captures(), truth):
        labels = [LabelRecord(class_id=CLASS_IDS[o["category"]], box=tuple(o["box_thermal"]), score=0.9,
                              provenance={"visible": 0.9, "thermal": 0.85}) for o in capture_truth["objects"]]
        ws.replace_auto_labels(capture.capture_id, labels)
    yield ws, truth
    ws.close()


def spoil(ws, capture_id: str, truth_objects) -> None:
    """A wrong class (a car called a person) and a box only the visible modality reports, on cold ground."""
    labels = [label for label in ws.labels(capture_id)]
    car = next(label for label in labels if label.class_id == CLASS_IDS["car"])
    ws.update_label(car.model_copy(update={"class_id": CLASS_IDS["person"]}))
    ws.add_label(capture_id, LabelRecord(class_id=CLASS_IDS["person"], box=(5.0, 500.0, 9.0, 504.0), score=0.55,
                                         provenance={"visible": 0.55}))


def test_the_capture_with_errors_comes_first_with_its_reasons(labelled):
    ws, truth = labelled
    spoiled = ws.captures()[2].capture_id
    spoil(ws, spoiled, truth[2]["objects"])
    report = queue_workspace(ws, executor=QUIET)
    assert (report.planned, report.done, report.failed) == (4, 4, 0)
    order = review_order(ws)
    assert [entry.capture_id for entry in order][0] == spoiled
    first = order[0]
    assert first.priority > 2 * max(entry.priority for entry in order[1:])
    assert any("size unlike its class" in reason for reason in first.reasons)
    assert any("one modality" in reason for reason in first.reasons)
    stored = ws.stage_result(spoiled, "queue")
    assert len(stored["labels"]) == len(truth[2]["objects"]) + 1  # every label weighed, with its evidence
    assert sum(item["p_error"] for item in stored["labels"].values()) <= stored["priority"] + 1e-3  # rounded to 4 places


def test_a_rerun_weighs_only_captures_whose_labels_changed(labelled):
    ws, truth = labelled
    queue_workspace(ws, executor=QUIET)
    again = queue_workspace(ws, executor=QUIET)
    assert (again.done, again.skipped) == (0, 4)
    spoil(ws, ws.captures()[1].capture_id, truth[1]["objects"])
    third = queue_workspace(ws, executor=QUIET)
    assert (third.done, third.skipped) == (1, 3)
    assert review_order(ws)[0].capture_id == ws.captures()[1].capture_id


def test_a_dropped_object_is_a_warm_candidate_or_a_detection_candidate(labelled):
    ws, truth = labelled
    capture = ws.captures()[0].capture_id
    labels = ws.labels(capture)
    car = next(label for label in labels if label.class_id == CLASS_IDS["car"])
    ws.replace_auto_labels(capture, [label for label in labels if label.id != car.id])
    ws.record_outcome(capture, "autolabel", "done", {"model": "test", "per_modality": {
        "thermal": [[*car.box, 0.2, CLASS_IDS["car"]]], "visible": []}}, [])
    queue_workspace(ws, executor=QUIET)
    candidates = ws.stage_result(capture, "queue")["candidates"]
    assert any(c["reason"] == DETECTED_UNLABELLED and c["class"] == "car" and c["score"] == 0.2 for c in candidates) or \
        any(c["reason"] == "warm, unlabelled" for c in candidates)
    assert review_order(ws)[0].capture_id == capture


def test_reviewed_captures_leave_the_queue_and_limit_holds(labelled):
    ws, _ = labelled
    queue_workspace(ws, executor=QUIET)
    first = review_order(ws)[0].capture_id
    ws.record_stage_result(first, "review", "done", {"tags": ["reviewed"]})
    assert first not in [entry.capture_id for entry in review_order(ws)]
    assert len(review_order(ws, include_reviewed=True)) == 4
    assert len(review_order(ws, limit=2)) == 2


def test_the_priority_model_is_a_sum_of_probabilities():
    model = PriorityModel(label_bias=0.0, label_weights={"one modality": 1.0}, label_score_weight=0.0)
    assert model.label_probability([], 1.0) == pytest.approx(0.5)
    assert model.label_probability(["one modality"], 1.0) == pytest.approx(1 / (1 + 2.718281828 ** -1))
    assert model.candidate_probability(100.0) == model.candidate_probability(20.0)  # contrast capped


def test_cleanlab_ranks_the_same_captures(labelled):
    ws, truth = labelled
    spoil(ws, ws.captures()[2].capture_id, truth[2]["objects"])
    queue_workspace(ws, executor=QUIET)
    ranked = review_order(ws, rank="cleanlab")
    assert sorted(entry.capture_id for entry in ranked) == sorted(c.capture_id for c in ws.captures())
    assert all(0.0 <= entry.priority <= 1.0 for entry in ranked)


def test_the_report_has_a_review_first_page_in_queue_order(labelled):
    from ums.report import REVIEW_FIRST_PAGE, write_html_report

    ws, truth = labelled
    spoiled = ws.captures()[2].capture_id
    spoil(ws, spoiled, truth[2]["objects"])
    index = write_html_report(ws)
    assert "run <code>ums queue</code>" in index.read_text()
    queue_workspace(ws, executor=QUIET)
    index = write_html_report(ws)
    assert REVIEW_FIRST_PAGE in index.read_text()
    page = (index.parent / REVIEW_FIRST_PAGE).read_text()
    order = [entry.capture_id for entry in review_order(ws)]
    positions = [page.index(f'id="capture-{capture_id}"') for capture_id in order]
    assert positions == sorted(positions) and order[0] == spoiled
    assert "size unlike its class" in page


def test_ums_queue_prints_the_order_as_json_lines(labelled):
    from typer.testing import CliRunner

    from ums.cli import app

    ws, truth = labelled
    spoiled = ws.captures()[2].capture_id
    spoil(ws, spoiled, truth[2]["objects"])
    result = CliRunner().invoke(app, ["queue", "-w", str(ws.root), "--json", "--limit", "2", "--workers", "1"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["capture_id"] for line in lines][0] == spoiled and len(lines) == 2
    assert lines[0]["priority"] >= lines[1]["priority"] and lines[0]["reasons"]
    table = CliRunner().invoke(app, ["queue", "-w", str(ws.root), "--rank", "cleanlab", "--workers", "1"])
    assert table.exit_code == 0 and "review first (cleanlab)" in table.output


def test_ums_queue_before_align_exits_1_naming_the_stage(tmp_path):
    from typer.testing import CliRunner

    from ums.cli import app
    from ums.core.workspace import Workspace

    Workspace.open(tmp_path / "ws").close()
    result = CliRunner().invoke(app, ["queue", "-w", str(tmp_path / "ws")])
    assert result.exit_code == 1 and "run `ums align` first" in result.output
