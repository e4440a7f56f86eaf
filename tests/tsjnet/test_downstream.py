"""Table 3 protocol: one detector/segmenter scored on several image sets against one set of labels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tests.tsjnet.conftest import make_ums_export
from tsjnet import downstream
from tsjnet.cli import app
from tsjnet.downstream import confusion_matrix, evaluate_detection, evaluate_segmentation, iou_from_confusion
from tsjnet.task_heads import TaskConfig

SMALL = dict(detector_min_size=96, detector_max_size=128, detector_box_samples=32)


class PerfectDetector(torch.nn.Module):
    """Answers each image with the ground-truth car box (COCO id 3): AP must be 1."""

    def forward(self, images):
        return [{"boxes": torch.tensor([[30.0, 20.0, 70.0, 50.0]]), "scores": torch.tensor([0.9]),
                 "labels": torch.tensor([3])} for _ in images]


def test_detection_maps_coco_labels_back_to_dataset_classes(tmp_path, monkeypatch):
    root = make_ums_export(tmp_path / "data")
    monkeypatch.setattr(downstream, "build_detector", lambda config, labels: PerfectDetector())
    result = evaluate_detection({"infrared": root / "ir", "visible": root / "vi"}, root / "labels", None,
                                TaskConfig(pretrained=False), show_progress=False)
    assert result["infrared"]["AP50"] == pytest.approx(1.0) and result["visible"]["images"] == 4


@pytest.mark.slow
def test_real_detector_runs_from_the_cli(tmp_path):
    root = make_ums_export(tmp_path / "data")
    result = CliRunner().invoke(app, ["eval-det", "--images", f"fused={root / 'ir'}", "--labels", str(root / "labels"),
                                      "--no-pretrained", "--json", "--no-progress"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert 0.0 <= payload["fused"]["AP50"] <= 1.0 and payload["fused"]["images"] == 4
    bad = CliRunner().invoke(app, ["eval-det", "--images", str(root / "ir"), "--labels", str(root / "labels")])
    assert bad.exit_code == 2 and "NAME=FOLDER" in bad.output


def test_iou_hand_worked():
    target = np.array([[0, 0, 1, 1], [0, 0, 1, 255]])
    prediction = np.array([[0, 1, 1, 1], [0, 0, 0, 2]])
    matrix = confusion_matrix(prediction.ravel(), target.ravel(), 3, 255)
    iou = iou_from_confusion(matrix)
    # class 0: TP 3, FP 1 (pixel (1,2)), FN 1 (pixel (0,1)) -> 3/5; class 1: TP 2, FP 1, FN 1 -> 2/4
    assert iou[0] == pytest.approx(3 / 5) and iou[1] == pytest.approx(2 / 4) and np.isnan(iou[2])


class OracleSegmenter(torch.nn.Module):
    """Predicts the labelled object from the image itself (the bright IR rectangle is class >= 1)."""

    def __init__(self, labels):
        super().__init__()
        self.labels = labels

    def forward(self, x):
        return {"out": torch.nn.functional.one_hot(self.labels, 9).permute(0, 3, 1, 2).float()}


def test_segmentation_scores_per_class(tmp_path, monkeypatch):
    root = make_ums_export(tmp_path / "data", names=("a",))
    truth = torch.from_numpy(downstream.read_segmentation(root / "Segmentation_labels" / "a.png"))[None]
    monkeypatch.setattr(downstream, "build_segmenter", lambda config: OracleSegmenter(truth))
    result = evaluate_segmentation({"fused": root / "ir"}, root / "Segmentation_labels",
                                   TaskConfig(pretrained=False), show_progress=False)
    assert result["fused"]["mIoU"] == pytest.approx(1.0)
    assert result["fused"]["IoU"]["1"] == pytest.approx(1.0) and result["fused"]["IoU"]["5"] is None


def test_real_segmenter_runs_from_the_cli(tmp_path):
    root = make_ums_export(tmp_path / "data", names=("a",))
    result = CliRunner().invoke(app, ["eval-seg", "--images", f"visible={root / 'vi'}", "--labels",
                                      str(root / "Segmentation_labels"), "--segmenter", "deeplabv3_resnet50",
                                      "--no-pretrained", "--json", "--no-progress"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)["visible"]
    assert 0.0 <= payload["mIoU"] <= 1.0 and set(payload["IoU"]) >= {"background", "car"}
