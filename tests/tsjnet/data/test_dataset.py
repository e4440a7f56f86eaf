"""Layouts, paired augmentation, integer segmentation labels and bad files."""

from __future__ import annotations

from tests.tsjnet.conftest import make_ums_export
import shutil

import cv2
import numpy as np
import pytest
import torch

from tests.conftest import shared_data
from tsjnet.data import FusionDataset, collate, discover
from tsjnet.data.dataset import IGNORE_INDEX

LABELS = {"person": 1, "bicycle": 2, "car": 3}




def test_ums_export_layout_and_integer_labels(tmp_path):
    root = make_ums_export(tmp_path / "export")
    train = discover(root, "train")
    assert [s.name for s in train.samples] == ["a", "b", "c"] and train.class_names == ["person", "bicycle", "car"]
    assert [s.name for s in discover(root, "val").samples] == ["d"]
    dataset = FusionDataset(train, LABELS, augment=False)
    sample = dataset[2]
    assert sample.infrared.shape == (1, 96, 128) and sample.visible.shape == (3, 96, 128)
    assert sorted(sample.segmentation.unique().tolist()) == [0, 3]  # 8-bit ids kept, never /255
    assert sample.labels.tolist() == [3]  # "car" -> COCO id 3
    assert torch.allclose(sample.boxes, torch.tensor([[30.0, 20.0, 70.0, 50.0]]), atol=1e-3)
    assert torch.allclose(sample.luma, 0.299 * sample.visible[0:1] + 0.587 * sample.visible[1:2]
                          + 0.114 * sample.visible[2:3], atol=1e-6)
    red = FusionDataset(train, LABELS, augment=False, visible_input="red")[2]
    assert torch.equal(red.luma, red.visible[0:1])  # the official training's input


def test_one_geometric_transform_for_everything(tmp_path):
    root = make_ums_export(tmp_path / "export", size=(100, 140))
    dataset = FusionDataset(discover(root, "train"), LABELS, crop=(64, 96), augment=True, seed=3)
    checked = 0
    for epoch in range(6):
        dataset.set_epoch(epoch)
        sample = dataset[0]
        bright = sample.infrared[0] > 0.8
        assert sample.infrared.shape == (1, 64, 96)
        if bright.sum() < 20 or len(sample.boxes) == 0:
            continue  # the object was cropped away
        rows, cols = torch.nonzero(bright, as_tuple=True)
        x0, y0, x1, y1 = sample.boxes[0].tolist()
        assert abs(cols.min().item() - x0) <= 3 and abs(rows.min().item() - y0) <= 3
        labelled = sample.segmentation == 1
        assert (labelled & bright).sum() > 0.9 * bright.sum()  # mask moved with the images
        assert (sample.visible[0][bright] > 0.6).float().mean() > 0.9  # the red object, same place
        checked += 1
    assert checked >= 2
    again = FusionDataset(discover(root, "train"), LABELS, crop=(64, 96), augment=True, seed=3)
    again.set_epoch(5)
    assert torch.equal(again[0].infrared, dataset[0].infrared)  # seeded by (seed, epoch, index)


def test_public_msrs_layout_with_yolo_boxes_and_no_segmentation():
    index = discover(shared_data("msrs"), "train")
    assert len(index.samples) == 13 and index.class_names == ["person", "bicycle", "car"]
    dataset = FusionDataset(index, LABELS, augment=False, resize=(96, 128))
    batch = collate([dataset[0], dataset[1]])
    assert batch.infrared.shape == (2, 1, 96, 128)
    assert (batch.segmentation == IGNORE_INDEX).all()
    assert sum(len(t["boxes"]) for t in batch.targets) > 0


def test_voc_boxes_and_hostile_xml(tmp_path):
    root = make_ums_export(tmp_path / "voc")
    shutil.rmtree(root / "labels")
    (root / "Annotations").mkdir()
    (root / "Annotations" / "a.xml").write_text(
        "<annotation><object><name>person</name><bndbox><xmin>5</xmin><ymin>6</ymin><xmax>25</xmax>"
        "<ymax>40</ymax></bndbox></object><object><name>zebra</name><bndbox><xmin>1</xmin><ymin>1</ymin>"
        "<xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>")
    (root / "Annotations" / "b.xml").write_text(
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
        "<annotation><object><name>&lol2;</name></object></annotation>")
    dataset = FusionDataset(discover(root, "train"), LABELS, augment=False)
    with pytest.warns(UserWarning, match="zebra"):
        sample = dataset[0]
    assert sample.labels.tolist() == [1] and sample.boxes.tolist() == [[5.0, 6.0, 25.0, 40.0]]
    with pytest.raises(ValueError, match="b.xml"):
        dataset[1]


def test_bad_files_are_named(tmp_path):
    root = make_ums_export(tmp_path / "bad")
    cv2.imwrite(str(root / "vi" / "a.png"), np.zeros((50, 50, 3), np.uint8))
    (root / "labels" / "b.txt").write_text("7 0.5 0.5 0.1 0.1\n")
    (root / "labels" / "c.txt").write_text("car 0.5 0.5\n")
    (root / "train.txt").write_text("a\nb\nc\nghost\n")
    index = discover(root, "train")
    assert any("ghost" in problem for problem in index.problems)
    dataset = FusionDataset(index, LABELS, augment=False)
    with pytest.raises(ValueError, match=r"a\.png.*registered"):
        dataset[0]
    with pytest.raises(ValueError, match=r"b\.txt.*class id 7"):
        dataset[1]
    with pytest.raises(ValueError, match=r"c\.txt:1"):
        dataset[2]
    with pytest.raises(FileNotFoundError, match="no ir/ and vi/"):
        discover(tmp_path, "train")
