"""``tsjnet eval-det`` / ``tsjnet eval-seg``: the paper's Table 3 protocol. One detector (or
segmenter) scores several image sets of the same scenes (fused, infrared, visible) against one set
of labels: mAP through pycocotools' COCOeval, per-class IoU and mIoU from a confusion matrix."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from tsjnet.data.dataset import read_rgb, read_segmentation, read_voc, read_yolo
from tsjnet.data.layout import read_class_names
from tsjnet.images import list_images
from tsjnet.task_heads import TaskConfig, build_detector, build_segmenter, detector_label_ids, imagenet_normalise
from ums.detections import Detections
from ums.detection_metrics import coco_map
from ums.core.progress import progress_bar


def read_rgb_tensor(path: Path) -> torch.Tensor:
    """3 x H x W in [0, 1]; grey images (fused, IR) come back as three equal channels."""
    return torch.from_numpy(read_rgb(path)).permute(2, 0, 1).float() / 255


def ground_truth(labels_dir: Path, names: list[str], class_names: list[str],
                 sizes: dict[str, tuple[int, int]]) -> dict[str, Detections]:
    """Boxes per image in dataset class ids (YOLO .txt with classes.txt, or VOC .xml)."""
    truth = {}
    index = {name: i for i, name in enumerate(class_names)}
    for name in names:
        yolo, voc = labels_dir / f"{name}.txt", labels_dir / f"{name}.xml"
        width, height = sizes[name]
        if yolo.is_file():
            boxes, classes = read_yolo(yolo, width, height)
        elif voc.is_file():
            boxes, names_in_file = read_voc(voc)
            keep = [i for i, label in enumerate(names_in_file) if label in index]
            boxes, classes = boxes[keep], [index[names_in_file[i]] for i in keep]
        else:
            boxes, classes = np.zeros((0, 4), np.float32), []
        truth[name] = Detections(boxes, np.ones(len(classes)), classes, "dataset")
    return truth


@torch.no_grad()
def detect(detector, paths: dict[str, Path], to_class: dict[int, int], device: torch.device,
           score_threshold: float, show_progress: bool, label: str) -> dict[str, Detections]:
    detector.eval()
    results = {}
    for name, path in progress_bar(list(paths.items()), f"detect ({label})", enabled=show_progress):
        output = detector([read_rgb_tensor(path).to(device)])[0]
        keep = [i for i, (score, cls) in enumerate(zip(output["scores"].tolist(), output["labels"].tolist()))
                if score >= score_threshold and cls in to_class]
        results[name] = Detections(output["boxes"][keep].cpu().numpy(), output["scores"][keep].cpu().numpy(),
                                   [to_class[int(output["labels"][i])] for i in keep], "dataset")
    return results


def evaluate_detection(image_sets: dict[str, Path], labels_dir: Path, classes_file: Path | None,
                       config: TaskConfig, device: str = "cpu", score_threshold: float = 0.05,
                       show_progress: bool = True) -> dict[str, dict[str, float]]:
    """{image set: {"AP50", "AP", "AR100", "images"}} for each named folder of images."""
    class_names = read_class_names(classes_file or _classes_beside(labels_dir))
    if not class_names:
        raise ValueError(f"{labels_dir}: no classes.txt beside the labels (pass --classes)")
    label_ids = detector_label_ids(config, class_names)
    to_class = {label_ids[name]: index for index, name in enumerate(class_names) if name in label_ids}
    num_labels = 91 if config.detector_labels == "coco" else len(class_names) + 1
    target = torch.device(device)
    detector = build_detector(config, num_labels).to(target)
    results = {}
    for set_name, folder in image_sets.items():
        paths = list_images(Path(folder))
        sizes = {name: tuple(cv2.imread(str(path), cv2.IMREAD_UNCHANGED).shape[1::-1]) for name, path in paths.items()}
        truth = ground_truth(Path(labels_dir), list(paths), class_names, sizes)
        predictions = detect(detector, paths, to_class, target, score_threshold, show_progress, set_name)
        results[set_name] = {**coco_map(predictions, truth, dict(enumerate(class_names))), "images": len(paths)}
    return results


def _classes_beside(labels_dir: Path) -> Path | None:
    return next((c for c in (labels_dir / "classes.txt", labels_dir.parent / "classes.txt") if c.is_file()), None)


def confusion_matrix(prediction: np.ndarray, target: np.ndarray, classes: int, ignore_index: int) -> np.ndarray:
    valid = (target != ignore_index) & (target >= 0) & (target < classes)
    return np.bincount(classes * target[valid] + prediction[valid], minlength=classes**2).reshape(classes, classes)


def iou_from_confusion(matrix: np.ndarray) -> np.ndarray:
    """Per class TP / (TP + FP + FN); NaN for a class absent from both prediction and truth."""
    true_positive = np.diag(matrix).astype(np.float64)
    union = matrix.sum(0) + matrix.sum(1) - true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, true_positive / union, np.nan)


@torch.no_grad()
def evaluate_segmentation(image_sets: dict[str, Path], labels_dir: Path, config: TaskConfig,
                          class_names: list[str] | None = None, device: str = "cpu",
                          show_progress: bool = True) -> dict[str, dict]:
    """{image set: {"mIoU": m, "IoU": {class: iou}, "images": n}}; mIoU over classes present."""
    target_device = torch.device(device)
    segmenter = build_segmenter(config).to(target_device).eval()
    classes = config.segmentation_classes
    names = class_names or [str(i) for i in range(classes)]
    labels = list_images(Path(labels_dir))
    results = {}
    for set_name, folder in image_sets.items():
        matrix = np.zeros((classes, classes), np.int64)
        paths = {name: path for name, path in list_images(Path(folder)).items() if name in labels}
        for name, path in progress_bar(list(paths.items()), f"segment ({set_name})", enabled=show_progress):
            image = read_rgb_tensor(path)[None].to(target_device)
            logits = segmenter(imagenet_normalise(image))["out"]
            truth = read_segmentation(labels[name])
            if truth.shape != tuple(logits.shape[-2:]):
                raise ValueError(f"{labels[name]}: {truth.shape[::-1]} labels for a {tuple(logits.shape[-1:-3:-1])} image {path}")
            matrix += confusion_matrix(logits.argmax(1)[0].cpu().numpy(), truth, classes, config.ignore_index)
        iou = iou_from_confusion(matrix)
        results[set_name] = {"mIoU": float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0,
                             "IoU": {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, iou)},
                             "images": len(paths)}
    return results
