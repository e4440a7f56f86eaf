from __future__ import annotations

from tests.ums.conftest import slice_sample
from tests.conftest import aligned_workspace

import numpy as np
import pytest

from ums.masks import encode_rle
from ums.core.records import LabelRecord
from ums.review import ALL_SLICES, CAPTIONS, build_review_dataset, dataset_name, sync_review
from ums.core.workspace import Workspace

pytest.importorskip("fiftyone")


@pytest.fixture()
def reviewed_workspace(synthetic_flight, tmp_path):
    ws = aligned_workspace(synthetic_flight, tmp_path / "ws")
    first, second = (c.capture_id for c in ws.captures()[:2])
    mask = np.zeros((512, 640), bool)
    mask[100:160, 100:220] = True
    ids = {
        "car": ws.add_label(first, LabelRecord(class_id=2, box=(100, 100, 220, 160), score=0.9, mask=encode_rle(mask),
                                               provenance={"visible": 0.9, "thermal": 0.8})),
        "person": ws.add_label(first, LabelRecord(class_id=0, box=(400, 200, 430, 280), score=0.3,
                                                  provenance={"thermal": 0.3})),
        "truck": ws.add_label(second, LabelRecord(class_id=5, box=(10, 10, 200, 100), score=0.8)),
    }
    yield ws, first, second, ids
    ws.close()




def test_dataset_groups_fields_and_saved_views(reviewed_workspace):
    ws, first, second, ids = reviewed_workspace
    dataset = build_review_dataset(ws)
    assert dataset.persistent and sorted(dataset.group_slices) == ["infrared", "overlay", "visible"]
    assert dataset.default_group_slice == "visible" and dataset.group_slice == "visible"
    assert len(dataset.select_group_slices(ALL_SLICES)) == 12
    overlay = slice_sample(dataset, first, "overlay")
    assert overlay.filepath.endswith("overlay.jpg") and overlay["detections"] is None
    assert {name: slice_sample(dataset, first, name)["caption"] for name in ALL_SLICES} == CAPTIONS
    sample = slice_sample(dataset, first, "visible")
    assert sample.filepath.endswith("vis.png") and sample["registration_decision"] == "frame"
    assert sample["relative_altitude_m"] > 50 and sample["alignment_overlay"].endswith("overlay.jpg")
    assert (sample["time_of_day"], sample["scenario"]) == ("day", "flight") and sample["altitude_band"]
    labels = {d.label: d for d in sample["detections"].detections}
    assert labels["car"].bounding_box == pytest.approx([100 / 640, 100 / 512, 120 / 640, 60 / 512])
    assert labels["car"]["modalities"] == "both" and labels["person"]["modalities"] == "thermal"
    assert dataset.default_mask_targets[3] == "car"
    views = set(dataset.list_saved_views())
    assert views == {"low registration confidence", "low-confidence detections", "visible/IR disagreements",
                     "not yet reviewed"}  # no "review first" and no priority until `ums queue` has run
    assert not dataset.has_sample_field("review_priority") and not dataset.has_sample_field("candidates")
    assert dataset.load_saved_view("low-confidence detections").count("detections.detections") == 2  # person x 2 slices
    assert dataset.load_saved_view("visible/IR disagreements").count("detections.detections") == 4
    assert len(dataset.load_saved_view("not yet reviewed")) == 8


def test_sync_brings_back_tags_edits_deletions_and_additions(reviewed_workspace):
    import fiftyone as fo

    ws, first, second, ids = reviewed_workspace
    dataset = build_review_dataset(ws)
    infrared = slice_sample(dataset, first, "infrared")
    infrared.tags.append("reviewed")
    for detection in infrared["detections"].detections:
        if detection.label == "car":
            detection.bounding_box = [110 / 640, 100 / 512, 120 / 640, 60 / 512]  # moved 10 px right
            detection.tags = ["wrong"]
    infrared["detections"].detections = [d for d in infrared["detections"].detections if d.label != "person"]
    infrared.save()
    visible = slice_sample(dataset, first, "visible")
    visible["detections"].detections.append(fo.Detection(label="bicycle", bounding_box=[0.5, 0.5, 0.05, 0.1]))
    visible.save()
    rejected = slice_sample(dataset, second, "visible")
    rejected.tags.append("reject")
    rejected.save()

    report = sync_review(ws)
    assert (report.edited, report.deleted, report.added, report.conflicts) == (1, 1, 1, 0)
    labels = {label.id: label for label in ws.labels(first)}
    car = labels[ids["car"]]
    assert car.source == "human" and car.reviewed and car.box == pytest.approx((110, 100, 230, 160)) and car.tags == ["wrong"]
    assert "deleted" in labels[ids["person"]].tags and labels[ids["person"]].protected
    bicycle = next(label for label in labels.values() if label.class_id == 1)
    assert bicycle.source == "human" and bicycle.box == pytest.approx((320, 256, 352, 307.2))
    assert ws.stage_results(first)["review"]["tags"] == ["reviewed"]
    assert ws.stage_results(second)["review"]["tags"] == ["reject"]
    assert [slice_sample(dataset, second, name).tags for name in ALL_SLICES] == [["reject"]] * 3  # the group reads alike
    # idempotent: a second sync changes nothing
    again = sync_review(ws)
    assert (again.edited, again.deleted, again.added, again.conflicts) == (0, 0, 0, 0)
    assert len(ws.labels(first)) == 3


def test_a_change_on_both_sides_is_a_conflict(reviewed_workspace):
    ws, first, second, ids = reviewed_workspace
    dataset = build_review_dataset(ws)
    truck = next(label for label in ws.labels(second) if label.id == ids["truck"])
    ws.update_label(truck.model_copy(update={"box": (12, 10, 200, 100)}))  # changed in the workspace meanwhile
    sample = slice_sample(dataset, second, "infrared")
    sample["detections"].detections[0].bounding_box = [0.5, 0.5, 0.1, 0.1]
    sample.save()
    report = sync_review(ws)
    assert report.conflicts == 1 and report.edited == 0 and "not applied" in report.issues[0].message
    assert next(label for label in ws.labels(second) if label.id == ids["truck"]).box == (12, 10, 200, 100)


def test_dataset_is_named_after_the_workspace_folder_and_unique_per_place(tmp_path, monkeypatch):
    from fiftyone.core.utils import to_slug

    names = {}
    for parent, folder in (("site-a", "Flight 7 (ü)"), ("site-b", "Flight 7 (ü)"), ("site-a", "!!!")):
        with Workspace.open(tmp_path / parent / folder) as ws:
            names[parent, folder] = dataset_name(ws)
    monkeypatch.chdir(tmp_path / "site-a")
    with Workspace.open("Flight 7 (ü)") as ws:  # the same folder, reached by a relative path
        assert dataset_name(ws) == names["site-a", "Flight 7 (ü)"]
    assert names["site-a", "Flight 7 (ü)"] != names["site-b", "Flight 7 (ü)"]
    assert all("Flight 7 (ü)" in name for (_, folder), name in names.items() if folder != "!!!")
    slugs = {to_slug(name) for name in names.values()}  # FiftyOne refuses a name whose slug another one has
    assert len(slugs) == len(names) and all(slugs)


def test_review_before_align_says_what_to_run_without_starting_fiftyone(synthetic_flight, tmp_path, monkeypatch):
    from ums import review
    from ums.core.executors import ExecutorSettings
    from ums.ingest import IngestConfig, ingest_flight
    from ums.review import NothingToReview

    def no_database(workspace):
        raise AssertionError("FiftyOne's database was started for a workspace with nothing to review")

    monkeypatch.setattr(review, "connect_fiftyone", no_database)
    with Workspace.open(tmp_path / "ws") as ws:
        ingest_flight(ws, synthetic_flight, IngestConfig(), ExecutorSettings(show_progress=False))
        with pytest.raises(NothingToReview) as error:
            build_review_dataset(ws)
    assert str(error.value) == (f"nothing to review: no capture in {ws.root} is aligned yet (run `ums crop`, then `ums align`, "
                                "on this workspace first)")
