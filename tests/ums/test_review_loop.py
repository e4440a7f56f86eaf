"""The human loop end to end: labels -> review queue -> review dataset -> edits as the App stores them
-> --sync -> autolabel rerun keeps the human labels -> split -> export, re-read by the formats' own
readers."""

from __future__ import annotations

from tests.conftest import aligned_workspace

import json

import pytest

from tests.ums.autolabel.models import TINY_SAM, tiny_sam_checkpoint, yolov7_end_to_end
from tests.ums.autolabel.models import ROWS
from ums.autolabel.detectors import DetectorConfig
from ums.autolabel.sam import SamConfig
from ums.autolabel.stage import AutolabelConfig, autolabel_workspace
from ums.export import export_workspace
from ums.core.executors import ExecutorSettings
from ums.queue import QueueConfig, queue_workspace
from ums.review import REVIEW_FIRST, build_review_dataset, sync_review
from ums.split import SplitConfig, split_workspace
from ums.synth import SynthFlightConfig, synth_flight

fo = pytest.importorskip("fiftyone")


def test_review_loop(tmp_path):
    synth_flight(tmp_path / "flight", SynthFlightConfig(n=6, seed=4, show_progress=False))
    ws = aligned_workspace(tmp_path / "flight", tmp_path / "ws")
    config = AutolabelConfig(
        detector=DetectorConfig(weights=yolov7_end_to_end(tmp_path / "y7.onnx", ROWS)),
        sam=SamConfig(checkpoint=tiny_sam_checkpoint(tmp_path / "sam.pth"), model_type="custom", architecture=TINY_SAM),
        visible_resolution="aligned")  # the fixed detections are drawn for the 640x512 grid
    autolabel_workspace(ws, config, ExecutorSettings(show_progress=False))
    queue_workspace(ws, QueueConfig(), ExecutorSettings(show_progress=False, workers=1))

    dataset = build_review_dataset(ws)
    assert len(dataset.load_saved_view(REVIEW_FIRST)) == 6
    first = dataset.select_group_slices("infrared").first()
    candidates = len(first["candidates"].detections)
    first["candidates"].detections = []  # the reviewer found no missed object
    # the App stores a moved box by rewriting the detection's bounding_box; a drawn box as a new detection
    car = next(d for d in first["detections"].detections if d.label == "car")
    car.bounding_box = [0.2, 0.2, 0.2, 0.1]
    first["detections"].detections.append(fo.Detection(label="truck", bounding_box=[0.6, 0.1, 0.2, 0.15]))
    first.tags.append("reviewed")
    first.save()
    last = dataset.select_group_slices("visible").last()
    last.tags.append("reject")
    last.save()
    report = sync_review(ws)
    assert (report.edited, report.added, report.conflicts) == (1, 1, 0)
    assert (report.queued_reviewed, report.candidates_accepted, report.candidates_dismissed) == (1, 0, candidates)
    assert len(dataset.load_saved_view(REVIEW_FIRST)) == 5  # the reviewed group left it

    autolabel_workspace(ws, config.model_copy(update={"force": True}))  # must not undo the review
    labels = ws.labels(first["capture_id"])
    human = [label for label in labels if label.source == "human"]
    assert sorted(label.class_id for label in human) == [2, 5]  # the moved car and the drawn truck
    assert next(l for l in human if l.class_id == 2).box == pytest.approx((128, 102.4, 256, 153.6))
    assert not any(l.source == "auto" and l.class_id == 2 for l in labels)  # no duplicate of the human car

    split = split_workspace(ws, SplitConfig(max_block_captures=2))
    assert split.rejected == 1
    blocks: dict[int, set[str]] = {}
    for capture in ws.captures():
        result = ws.stage_results(capture.capture_id)["split"]
        if result["status"] == "done":
            blocks.setdefault(result["block"], set()).add(result["split"])
    assert all(len(splits) == 1 for splits in blocks.values())

    export_workspace(ws, tmp_path / "coco", "coco")
    coco = fo.Dataset.from_dir(dataset_type=fo.types.COCODetectionDataset, data_path=str(tmp_path / "coco"),
                               labels_path=str(tmp_path / "coco" / "annotations.json"), label_types="detections",
                               label_field="ground_truth")
    assert len(coco) == 5 and coco.count("ground_truth.detections") == sum(
        len([l for l in ws.labels(c.capture_id) if not l.excluded]) for c in ws.captures()
        if ws.stage_results(c.capture_id)["review"].get("tags") != ["reject"])
    export_workspace(ws, tmp_path / "yolo", "yolo")
    yolo = {split: fo.Dataset.from_dir(dataset_type=fo.types.YOLOv5Dataset, dataset_dir=str(tmp_path / "yolo"),
                                       yaml_path=str(tmp_path / "yolo" / "data.yaml"), split=split)
            for split in ("train", "val", "test")}
    assert {split: len(dataset) for split, dataset in yolo.items()} == {
        split: len((tmp_path / "yolo" / f"{split}.txt").read_text().split()) for split in yolo}
    assert sum(len(dataset) for dataset in yolo.values()) == 5
    assert "truck" in {label for dataset in yolo.values() if len(dataset)
                       for label in dataset.distinct("ground_truth.detections.label")}
    export_workspace(ws, tmp_path / "voc", "voc")
    assert len(list((tmp_path / "voc" / "Annotations").glob("*.xml"))) == 5
    export_workspace(ws, tmp_path / "msrs", "msrs", redact=True)
    listed = sum(len((tmp_path / "msrs" / f"{s}.txt").read_text().split()) for s in ("train", "val", "test"))
    assert listed == 5
    metadata = [json.loads(l) for l in (tmp_path / "msrs" / "metadata.jsonl").read_text().splitlines()]
    assert all(m["exif"]["gps_latitude"] is None for m in metadata)
    ws.close()
