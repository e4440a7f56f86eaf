from __future__ import annotations

from tests.conftest import aligned_workspace

import contextlib
import io
import json
from xml.etree import ElementTree

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from ums.detections import Detections
from ums.masks import encode_rle
from ums.export import export_workspace
from ums.records import LabelRecord


@pytest.fixture(scope="module")
def labelled(synthetic_flight, tmp_path_factory):
    ws = aligned_workspace(synthetic_flight, tmp_path_factory.mktemp("ws"))
    first = ws.captures()[0].capture_id
    mask = np.zeros((512, 640), bool)
    mask[100:160, 100:220] = True
    ws.add_label(first, LabelRecord(class_id=2, box=(100, 100, 220, 160), score=0.9, mask=encode_rle(mask)))
    ws.add_label(first, LabelRecord(class_id=0, box=(400.5, 200, 430, 280), source="human"))
    ws.add_label(first, LabelRecord(class_id=5, box=(10, 10, 50, 40), tags=["reject"]))
    yield ws
    ws.close()


def test_coco_reads_back_with_pycocotools(labelled, tmp_path):
    counts = export_workspace(labelled, tmp_path, "coco")
    assert counts == {"pairs": 4, "labels": 2}  # the rejected label stays out
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(tmp_path / "annotations.json"))
    assert len(coco.getImgIds()) == 4 and [c["name"] for c in coco.loadCats(coco.getCatIds())][:3] == ["person", "bicycle", "car"]
    annotations = coco.loadAnns(coco.getAnnIds())
    car = next(a for a in annotations if a["category_id"] == 3)
    assert car["bbox"] == [100, 100, 120, 60] and coco.annToMask(car).sum() == 60 * 120
    image = coco.loadImgs(car["image_id"])[0]
    assert cv2.imread(str(tmp_path / image["file_name"]), cv2.IMREAD_GRAYSCALE).shape == (512, 640)
    assert cv2.imread(str(tmp_path / image["visible_file_name"])).shape == (512, 640, 3)


def test_yolo_and_voc_and_semantic(labelled, tmp_path):
    export_workspace(labelled, tmp_path / "yolo", "yolo")
    first = labelled.captures()[0].capture_id
    boxes = Detections.from_yolo_txt(tmp_path / "yolo" / "labels" / "infrared" / f"{first}.txt", 640, 512, "ums")
    np.testing.assert_allclose(sorted(boxes.boxes.tolist()), [[100, 100, 220, 160], [400.5, 200, 430, 280]], atol=1e-3)
    assert (tmp_path / "yolo" / "images" / "visible" / f"{first}.png").exists()
    assert "names" in (tmp_path / "yolo" / "data.yaml").read_text()
    export_workspace(labelled, tmp_path / "voc", "voc")
    root = ElementTree.parse(tmp_path / "voc" / "Annotations" / f"{first}.xml").getroot()
    objects = {o.findtext("name"): [int(o.find("bndbox").findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax")]
               for o in root.iter("object")}
    assert objects == {"car": [101, 101, 220, 160], "person": [402, 201, 430, 280]}
    export_workspace(labelled, tmp_path / "sem", "semantic")
    semantic = cv2.imread(str(tmp_path / "sem" / "Segmentation_labels" / f"{first}.png"), cv2.IMREAD_UNCHANGED)
    assert semantic[130, 150] == 3 and semantic[0, 0] == 0 and (semantic == 3).sum() == 60 * 120
    with pytest.raises(ValueError, match="unknown export format"):
        export_workspace(labelled, tmp_path / "x", "pascal")


def test_msrs_layout_with_split_lists_metadata_and_card(labelled, tmp_path):
    from ums.split import SplitConfig, split_workspace

    split_workspace(labelled, SplitConfig(max_block_captures=1))
    counts = export_workspace(labelled, tmp_path, "msrs", redact=True)
    assert counts["pairs"] == 4
    first = labelled.captures()[0].capture_id
    assert cv2.imread(str(tmp_path / "ir" / f"{first}.png"), cv2.IMREAD_GRAYSCALE).shape == (512, 640)
    assert cv2.imread(str(tmp_path / "vi" / f"{first}.png")).shape == (512, 640, 3)
    semantic = cv2.imread(str(tmp_path / "Segmentation_labels" / f"{first}.png"), cv2.IMREAD_UNCHANGED)
    assert semantic[130, 150] == 1 and semantic[0, 0] == 0  # UMS car -> MSRS car (1)
    assert (tmp_path / "classes.txt").read_text().splitlines()[:3] == ["person", "bicycle", "car"]
    lists = {name: (tmp_path / f"{name}.txt").read_text().split() for name in ("train", "val", "test")}
    assert sorted(sum(lists.values(), [])) == sorted(c.capture_id for c in labelled.captures())
    metadata = [json.loads(line) for line in (tmp_path / "metadata.jsonl").read_text().splitlines()]
    assert len(metadata) == 4 and all("GpsLatitude" not in m["xmp"] and m["exif"]["gps_latitude"] is None for m in metadata)
    card = (tmp_path / "README.md").read_text()
    assert "| car | 1 |" in card and "| person | 1 |" in card
    for plot in ("classes.png", "strata.png", "samples.jpg"):
        assert (tmp_path / "card" / plot).stat().st_size > 1000


@pytest.mark.parametrize("fmt", ["coco", "yolo", "voc", "semantic"])
def test_every_export_has_metadata_split_lists_and_a_card(labelled, tmp_path, fmt):
    export_workspace(labelled, tmp_path, fmt, redact=True)
    card = (tmp_path / "README.md").read_text()
    assert f"--format {fmt}" in card and (tmp_path / "card" / "samples.jpg").exists()
    assert len((tmp_path / "metadata.jsonl").read_text().splitlines()) == 4
    assert "GpsLatitude" not in (tmp_path / "metadata.jsonl").read_text()
