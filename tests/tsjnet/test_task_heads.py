"""Task networks from torchvision's classes, loaded from local files; frozen unless trained."""

from __future__ import annotations

import pytest
import torch

from tsjnet.task_heads import DeepLabV3Plus, TaskConfig, TaskHeads, build_detector, build_segmenter, coco_label_ids

SMALL = dict(detector_min_size=64, detector_max_size=96, detector_box_samples=32, segmenter="deeplabv3_resnet50")


def test_coco_label_space():
    ids = coco_label_ids()
    assert (ids["person"], ids["bicycle"], ids["car"], ids["toothbrush"]) == (1, 2, 3, 90)
    assert len(ids) == 80


def test_detector_loads_the_configured_weights_and_keeps_its_head(tmp_path):
    torch.manual_seed(0)
    source = build_detector(TaskConfig(pretrained=False, **SMALL), 91)
    path = tmp_path / "fasterrcnn_coco.pth"
    torch.save(source.state_dict(), path)
    loaded = build_detector(TaskConfig(detector_weights=path, **SMALL), 91)
    for (name, a), b in zip(source.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name  # the box predictor included: never re-initialised
    with pytest.raises(ValueError, match="--detector-weights"):
        build_detector(TaskConfig(**SMALL), 91)
    with pytest.raises(ValueError, match="not Faster R-CNN"):
        build_detector(TaskConfig(detector_weights=path, **SMALL), 4)


def test_frozen_tasks_pass_gradients_to_the_fused_image_only():
    torch.manual_seed(0)
    heads = TaskHeads(TaskConfig(pretrained=False, segmentation_classes=9, **SMALL), ["person", "car"], True, True)
    heads.train()
    assert not any(p.requires_grad for p in heads.parameters())
    assert not heads.segmenter.training and heads.detector.training
    bn = next(m for m in heads.segmenter.modules() if isinstance(m, torch.nn.BatchNorm2d))
    stats = bn.running_mean.clone()
    fused = torch.rand(2, 1, 64, 96, requires_grad=True)
    labels = torch.randint(0, 9, (2, 64, 96))
    targets = [{"boxes": torch.tensor([[5.0, 5.0, 40.0, 50.0]]), "labels": torch.tensor([3])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]  # no boxes: fine
    losses = heads.detection_losses(fused, targets, ("loss_box_reg", "loss_objectness", "loss_rpn_box_reg"))
    segmentation = heads.segmentation_loss(fused, labels)
    (sum(losses.values()) + segmentation).backward()
    assert fused.grad is not None and fused.grad.abs().sum() > 0
    assert torch.equal(bn.running_mean, stats)  # eval-mode norms: no drift
    assert heads.segmentation_loss(fused, torch.full_like(labels, 255)) is None


def test_segmenter_heads_and_weight_checks(tmp_path):
    plus = DeepLabV3Plus(9)
    assert plus.eval()(torch.rand(1, 3, 64, 96))["out"].shape == (1, 9, 64, 96)
    voc = build_segmenter(TaskConfig(pretrained=False, segmenter="deeplabv3_resnet50", segmentation_classes=21))
    path = tmp_path / "deeplab_voc.pth"
    torch.save(voc.state_dict(), path)
    with pytest.raises(ValueError, match="another class count"):
        build_segmenter(TaskConfig(segmenter="deeplabv3_resnet50", segmenter_weights=path, segmentation_classes=9))
    tuned = build_segmenter(TaskConfig(segmenter="deeplabv3_resnet50", segmenter_weights=path, segmentation_classes=9,
                                       train_segmenter=True))
    assert torch.equal(tuned.backbone.conv1.weight, voc.backbone.conv1.weight)
    with pytest.raises(ValueError, match="--segmenter-weights"):
        build_segmenter(TaskConfig(segmenter="deeplabv3_resnet50"))
