"""The task networks TSJNet's joint loss attaches (docs/reference/tsjnet.md §4.2-4.3), built from torchvision's own
classes and loaded from local weight files only.

- Detector: Faster R-CNN ResNet-50 FPN (FrozenBatchNorm backbone, 3 trainable stages, as torchvision
  builds it for pretrained weights), COCO's 91-way head kept from the weights (the official code
  replaced it with a random one it never trained).
- Segmenter: DeepLabV3 ResNet-101 (the code), ResNet-50, or a DeepLabV3+ head (the paper).
Both are frozen unless the config trains them: parameters without gradients and, for the segmenter,
eval-mode BatchNorm, while gradients still reach the fused image. Inputs are the 1-channel image
repeated to 3 channels and ImageNet-normalised (the official code relied on broadcasting and fed
DeepLab unnormalised images).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from safetensors.torch import load_file

from ums.weights import resolve_weights

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TaskConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    detector: Literal["fasterrcnn_resnet50_fpn", "none"] = "fasterrcnn_resnet50_fpn"
    detector_weights: Path | None = None
    # "coco": the 91-way COCO label space of pretrained weights (dataset names mapped by name);
    # "dataset": 1 + the dataset's classes (a detector trained on it)
    detector_labels: Literal["coco", "dataset"] = "coco"
    detector_min_size: int = 800  # torchvision's resize (480x640 -> 800x1067, as in the official run)
    detector_max_size: int = 1333
    detector_box_samples: int = 512  # ROI-head proposals sampled per image (torchvision's default)
    train_detector: bool = False
    segmenter: Literal["deeplabv3_resnet101", "deeplabv3_resnet50", "deeplabv3plus_resnet101", "none"] = \
        "deeplabv3_resnet101"
    segmenter_weights: Path | None = None
    segmentation_classes: int = 9  # MSRS: 0 unlabelled, car, person, bike, curve, car_stop, guardrail, cone, bump
    ignore_index: int = 255
    train_segmenter: bool = False
    pretrained: bool = True  # False (--no-pretrained): random task networks, for tests only
    task_lr: float = 1e-4
    task_amp: bool = False  # run the task networks under autocast (their losses stay fp32 either way)


def coco_label_ids() -> dict[str, int]:
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

    names = FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"]  # index = COCO category id
    return {name: index for index, name in enumerate(names) if name not in ("__background__", "N/A")}


def detector_label_ids(config: TaskConfig, class_names: list[str]) -> dict[str, int]:
    if config.detector_labels == "coco":
        return coco_label_ids()
    return {name: index + 1 for index, name in enumerate(class_names)}


def read_state_dict(path: Path, flag: str) -> dict[str, torch.Tensor]:
    path = resolve_weights(path, flag)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found ({flag})")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("model", state) if isinstance(state, dict) else state


def missing_weights_error(kind: str, flag: str) -> ValueError:
    return ValueError(f"the {kind} needs local weights: pass {flag} PATH (e.g. torchvision's COCO checkpoint "
                      "copied from a machine with internet), or --no-pretrained for a random network (tests)")


def build_detector(config: TaskConfig, num_classes: int) -> nn.Module:
    from torchvision.models import resnet50
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops import FrozenBatchNorm2d

    backbone = _resnet_fpn_extractor(resnet50(weights=None, norm_layer=FrozenBatchNorm2d), trainable_layers=3)
    detector = FasterRCNN(backbone, num_classes=num_classes, min_size=config.detector_min_size,
                          max_size=config.detector_max_size, box_batch_size_per_image=config.detector_box_samples)
    if config.pretrained:
        if config.detector_weights is None:
            raise missing_weights_error("detector (Faster R-CNN R50-FPN)", "--detector-weights")
        state = read_state_dict(Path(config.detector_weights), "--detector-weights")
        try:
            detector.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise ValueError(f"{config.detector_weights}: not Faster R-CNN R50-FPN weights for {num_classes} "
                             f"labels ({str(error).splitlines()[0]})") from None
    return detector


class DeepLabV3Plus(nn.Module):
    """DeepLabV3+ (Chen et al. 2018): ASPP on the stride-8 ResNet features, decoder fusing the
    stride-4 ``layer1`` features (projected to 48 channels), logits upsampled to the input size."""

    def __init__(self, num_classes: int, backbone: str = "resnet101"):
        super().__init__()
        from torchvision.models import resnet50, resnet101
        from torchvision.models._utils import IntermediateLayerGetter
        from torchvision.models.segmentation.deeplabv3 import ASPP

        network = {"resnet101": resnet101, "resnet50": resnet50}[backbone](
            weights=None, replace_stride_with_dilation=[False, True, True])
        self.backbone = IntermediateLayerGetter(network, {"layer1": "low", "layer4": "out"})
        self.aspp = ASPP(2048, [12, 24, 36])
        self.low_level = nn.Sequential(nn.Conv2d(256, 48, 1, bias=False), nn.BatchNorm2d(48), nn.ReLU())
        self.decoder = nn.Sequential(nn.Conv2d(256 + 48, 256, 3, padding=1, bias=False), nn.BatchNorm2d(256), nn.ReLU(),
                                     nn.Conv2d(256, 256, 3, padding=1, bias=False), nn.BatchNorm2d(256), nn.ReLU(),
                                     nn.Conv2d(256, num_classes, 1))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(x)
        context = F.interpolate(self.aspp(features["out"]), size=features["low"].shape[-2:], mode="bilinear",
                                align_corners=False)
        logits = self.decoder(torch.cat([context, self.low_level(features["low"])], dim=1))
        return {"out": F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)}


def build_segmenter(config: TaskConfig) -> nn.Module:
    from torchvision.models.segmentation import deeplabv3_resnet50, deeplabv3_resnet101

    classes = config.segmentation_classes
    if config.segmenter == "deeplabv3plus_resnet101":
        segmenter: nn.Module = DeepLabV3Plus(classes)
    else:
        build = {"deeplabv3_resnet101": deeplabv3_resnet101, "deeplabv3_resnet50": deeplabv3_resnet50}[config.segmenter]
        segmenter = build(weights=None, weights_backbone=None, num_classes=classes, aux_loss=True)
    if config.pretrained:
        if config.segmenter_weights is None:
            raise missing_weights_error(f"segmenter ({config.segmenter})", "--segmenter-weights")
        load_segmenter_weights(segmenter, config)
    return segmenter


def load_segmenter_weights(segmenter: nn.Module, config: TaskConfig) -> None:
    state = read_state_dict(Path(config.segmenter_weights), "--segmenter-weights")
    own = segmenter.state_dict()
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if mismatched and not config.train_segmenter:
        raise ValueError(f"{config.segmenter_weights}: its head ({', '.join(mismatched[:2])}) has another class "
                         f"count than the dataset's {config.segmentation_classes}; a frozen segmenter with a new "
                         "random head teaches nothing: train it (train_segmenter) or give weights for these classes")
    missing, unexpected = segmenter.load_state_dict({k: v for k, v in state.items() if k not in mismatched},
                                                    strict=False)
    if unexpected or [k for k in missing if k not in mismatched]:
        raise ValueError(f"{config.segmenter_weights}: not {config.segmenter} weights "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")


def freeze(module: nn.Module, trainable: bool, eval_norms: bool) -> nn.Module:
    module.requires_grad_(trainable)
    if not trainable and eval_norms:
        module.eval()
    return module


def to_three_channels(image: torch.Tensor) -> torch.Tensor:
    return image.expand(-1, 3, -1, -1) if image.shape[1] == 1 else image


def imagenet_normalise(image: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, device=image.device, dtype=image.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=image.device, dtype=image.dtype).view(1, 3, 1, 1)
    return (to_three_channels(image) - mean) / std


class TaskHeads(nn.Module):
    """Detector and segmenter with the loss terms the objective asks for."""

    def __init__(self, config: TaskConfig, class_names: list[str], use_detector: bool, use_segmenter: bool):
        super().__init__()
        self.config = config
        self.label_ids = detector_label_ids(config, class_names)
        num_labels = 91 if config.detector_labels == "coco" else len(class_names) + 1
        self.detector = build_detector(config, num_labels) if use_detector and config.detector != "none" else None
        self.segmenter = build_segmenter(config) if use_segmenter and config.segmenter != "none" else None
        self.set_modes()

    def set_modes(self) -> None:
        # the detector's losses exist only in train mode; its norms are FrozenBatchNorm either way
        if self.detector is not None:
            freeze(self.detector, self.config.train_detector, eval_norms=False).train()
        if self.segmenter is not None:
            freeze(self.segmenter, self.config.train_segmenter, eval_norms=True)
            if self.config.train_segmenter:
                self.segmenter.train()

    def train(self, mode: bool = True) -> TaskHeads:
        super().train(mode)
        self.set_modes()
        return self

    def detection_losses(self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]],
                         terms: tuple[str, ...]) -> dict[str, torch.Tensor]:
        losses = self.detector(list(to_three_channels(images.float())), targets)
        return {name: losses[name].float() for name in terms}

    def segmentation_loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
        if bool((labels == self.config.ignore_index).all()):
            return None  # no labelled pixel in the batch: the term is absent, not NaN
        logits = self.segmenter(imagenet_normalise(images.float()))["out"]
        return F.cross_entropy(logits.float(), labels, ignore_index=self.config.ignore_index)
