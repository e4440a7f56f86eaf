"""A torch Dataset of IR/visible pairs with boxes and segmentation maps, augmented as pairs.

One geometric transform (albumentations) moves IR, visible, mask and boxes together; photometric
changes are drawn per modality. Every random draw is seeded by (seed, epoch, index), so a resumed
run and every DataLoader worker see exactly the augmentations of an uninterrupted run.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.etree.ElementTree import ParseError

import albumentations as A
import cv2
import numpy as np
import torch
from defusedxml import ElementTree

from tsjnet.data.layout import DatasetIndex, SampleFiles
from tsjnet.images import read_image, to_uint8

IGNORE_INDEX = 255


@dataclass
class Sample:
    name: str
    infrared: torch.Tensor  # 1 x H x W in [0, 1]
    visible: torch.Tensor  # 3 x H x W RGB in [0, 1]
    luma: torch.Tensor  # 1 x H x W: BT.601 Y of ``visible`` (or its R channel, visible_input='red')
    segmentation: torch.Tensor  # H x W int64, IGNORE_INDEX where unlabelled
    boxes: torch.Tensor  # N x 4 float32 x0 y0 x1 y1 pixels
    labels: torch.Tensor  # N int64, detector label ids


def read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path}: not a readable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_grey(path: Path) -> np.ndarray:
    """8-bit grey, as ``tsjnet fuse`` reads the infrared (colour through BT.601, 16-bit scaled)."""
    return to_uint8(read_image(path, colour=False))


def read_segmentation(path: Path) -> np.ndarray:
    """Class ids as stored (8-bit 'L' or 'P' PNGs): never divided by 255 (docs/reference/tsjnet.md §4.4)."""
    labels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if labels is None or labels.ndim != 2:
        raise ValueError(f"{path}: not a single-channel class-id map")
    return labels.astype(np.int64)


def read_yolo(path: Path, width: int, height: int) -> tuple[np.ndarray, list[int]]:
    boxes, classes = [], []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            cls, cx, cy, w, h = int(parts[0]), *map(float, parts[1:5])
        except (ValueError, TypeError):
            raise ValueError(f"{path}:{number}: not a YOLO box line 'class cx cy w h': {line!r}") from None
        boxes.append([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height])
        classes.append(cls)
    return np.array(boxes, np.float32).reshape(-1, 4), classes


def read_voc(path: Path) -> tuple[np.ndarray, list[str]]:
    try:
        root = ElementTree.parse(str(path)).getroot()
    except (ParseError, ValueError) as error:  # defusedxml refuses entities and DTDs with ValueError subclasses
        raise ValueError(f"{path}: not a Pascal-VOC annotation ({error})") from None
    boxes, names = [], []
    for obj in root.iter("object"):
        box = obj.find("bndbox")
        if box is None:
            continue
        boxes.append([float(box.findtext(k, "nan")) for k in ("xmin", "ymin", "xmax", "ymax")])
        names.append((obj.findtext("name") or "").strip())
    return np.array(boxes, np.float32).reshape(-1, 4), names


class FusionDataset(torch.utils.data.Dataset):
    """``crop``: (H, W), multiples of 32, for training crops; None pads whole images to a multiple of 32.
    ``resize`` (H, W) scales every pair first (small CPU runs).

    ``label_ids`` maps a dataset class name to the detector's label id; boxes of other classes are
    dropped (with one warning per name)."""

    def __init__(self, index: DatasetIndex, label_ids: dict[str, int], crop: tuple[int, int] | None = None,
                 augment: bool = True, seed: int = 0, multiple: int = 32, resize: tuple[int, int] | None = None,
                 visible_input: str = "luma"):
        if visible_input not in ("luma", "red"):
            raise ValueError(f"visible_input is 'luma' (BT.601 Y) or 'red' (the official training), not {visible_input!r}")
        self.index, self.label_ids, self.crop, self.visible_input = index, label_ids, crop, visible_input
        self.augment, self.seed, self.epoch = augment, seed, 0
        self._unknown_names: set[str] = set()
        resizing = [A.Resize(*resize)] if resize else []
        self.geometric = A.Compose(resizing + self._geometric(crop, augment, multiple), additional_targets={"infrared": "image"},
                                   bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"],
                                                            min_visibility=0.3, clip=True, filter_invalid_bboxes=True))
        self.visible_photometric = A.Compose([A.ColorJitter(0.2, 0.2, 0.2, 0.02, p=0.8)])
        self.infrared_photometric = A.Compose([A.RandomBrightnessContrast(0.15, 0.15, p=0.8),
                                               A.GaussNoise(std_range=(0.0, 0.02), p=0.3)])

    @staticmethod
    def _geometric(crop, augment: bool, multiple: int) -> list:
        if crop is None:
            pad = A.PadIfNeeded(min_height=None, min_width=None, pad_height_divisor=multiple,
                                pad_width_divisor=multiple, position="top_left", border_mode=cv2.BORDER_REFLECT_101)
            return [pad] + ([A.HorizontalFlip(p=0.5)] if augment else [])
        height, width = crop
        if height % multiple or width % multiple:
            raise ValueError(f"training crop {height}x{width} must be a multiple of {multiple}")
        transforms = [A.PadIfNeeded(min_height=height, min_width=width, border_mode=cv2.BORDER_REFLECT_101)]
        if augment:
            transforms += [A.Affine(scale=(0.75, 1.25), p=0.5, border_mode=cv2.BORDER_REFLECT_101),
                           A.RandomCrop(height, width), A.HorizontalFlip(p=0.5)]
        else:
            transforms.append(A.CenterCrop(height, width))
        return transforms

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.index.samples)

    def _labels(self, files: SampleFiles, width: int, height: int) -> tuple[np.ndarray, list[int]]:
        if files.boxes is None:
            return np.zeros((0, 4), np.float32), []
        if files.boxes.suffix == ".xml":
            boxes, names = read_voc(files.boxes)
        else:
            boxes, ids = read_yolo(files.boxes, width, height)
            names = []
            for cls in ids:
                if not 0 <= cls < len(self.index.class_names):
                    raise ValueError(f"{files.boxes}: class id {cls} is not in {self.index.root}'s classes.txt")
                names.append(self.index.class_names[cls])
        keep = [i for i, name in enumerate(names) if name in self.label_ids]
        for name in set(names) - set(self.label_ids) - self._unknown_names:
            self._unknown_names.add(name)
            warnings.warn(f"{files.boxes}: class {name!r} has no detector label; its boxes are not used", stacklevel=2)
        valid = [i for i in keep if boxes[i, 2] > boxes[i, 0] and boxes[i, 3] > boxes[i, 1]]
        return boxes[valid].reshape(-1, 4), [self.label_ids[names[i]] for i in valid]

    def load(self, position: int) -> Sample:
        files = self.index.samples[position]
        visible, infrared = read_rgb(files.visible), read_grey(files.infrared)
        height, width = infrared.shape
        if visible.shape[:2] != (height, width):
            raise ValueError(f"{files.infrared} is {width}x{height} but {files.visible} is "
                             f"{visible.shape[1]}x{visible.shape[0]}: pairs must be registered")
        if files.segmentation is not None:
            mask = read_segmentation(files.segmentation)
            if mask.shape != (height, width):
                raise ValueError(f"{files.segmentation}: {mask.shape[1]}x{mask.shape[0]}, its images {width}x{height}")
        else:
            mask = np.full((height, width), IGNORE_INDEX, np.int64)
        boxes, labels = self._labels(files, width, height)
        seed = (self.seed * 1_000_003 + self.epoch * 10_007 + position) % 2**31
        self.geometric.set_random_seed(seed)
        out = self.geometric(image=visible, infrared=infrared, mask=mask, bboxes=boxes, labels=labels)
        visible, infrared = out["image"], out["infrared"]
        if self.augment:
            self.visible_photometric.set_random_seed(seed + 1)
            self.infrared_photometric.set_random_seed(seed + 2)
            visible = self.visible_photometric(image=visible)["image"]
            infrared = self.infrared_photometric(image=infrared)["image"]
        return self._to_sample(files.name, visible, infrared, out["mask"], out["bboxes"], out["labels"])

    def _to_sample(self, name, visible, infrared, mask, boxes, labels) -> Sample:
        visible_tensor = torch.from_numpy(np.ascontiguousarray(visible)).permute(2, 0, 1).float() / 255
        # "red" reproduces the official training, which fed the R channel while inference used Y
        weights = torch.tensor([1.0, 0.0, 0.0] if self.visible_input == "red" else [0.299, 0.587, 0.114]).view(3, 1, 1)
        return Sample(name=name, infrared=torch.from_numpy(np.ascontiguousarray(infrared)).float()[None] / 255,
                      visible=visible_tensor, luma=(visible_tensor * weights).sum(0, keepdim=True),
                      segmentation=torch.from_numpy(np.ascontiguousarray(mask)).long(),
                      boxes=torch.as_tensor(np.asarray(boxes, np.float32)).reshape(-1, 4),
                      labels=torch.as_tensor(np.asarray(labels, np.int64)).reshape(-1))

    def __getitem__(self, position: int) -> Sample:
        return self.load(position)


@dataclass
class Batch:
    names: list[str]
    infrared: torch.Tensor
    visible: torch.Tensor
    luma: torch.Tensor
    segmentation: torch.Tensor
    targets: list[dict[str, torch.Tensor]]

    def to(self, device) -> Batch:
        return self._map(lambda t: t.to(device, non_blocking=True))

    def pin_memory(self) -> Batch:  # called by DataLoader(pin_memory=True) on CUDA runs
        return self._map(lambda t: t.pin_memory())

    def _map(self, apply) -> Batch:
        return Batch(self.names, apply(self.infrared), apply(self.visible), apply(self.luma), apply(self.segmentation),
                     [{k: apply(v) for k, v in target.items()} for target in self.targets])


def collate(samples: Sequence[Sample]) -> Batch:
    shapes = {tuple(s.infrared.shape) for s in samples}
    if len(shapes) > 1:
        raise ValueError(f"a batch mixes image sizes {sorted(shapes)}: set a training crop, or batch size 1")
    return Batch([s.name for s in samples], torch.stack([s.infrared for s in samples]),
                 torch.stack([s.visible for s in samples]), torch.stack([s.luma for s in samples]),
                 torch.stack([s.segmentation for s in samples]),
                 [{"boxes": s.boxes, "labels": s.labels} for s in samples])
