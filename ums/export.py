"""``ums export``: the workspace's aligned pairs and labels in standard formats.

Every format writes the pair images (``infrared/<capture>.png``, ``visible/<capture>.png``, both on
the aligned thermal grid, so one set of labels serves both; under ``images/`` for YOLO) and the labels:
- ``coco``: ``annotations.json`` (boxes and RLE masks; category id = UMS class id + 1);
- ``yolo``: ``labels/<capture>.txt`` (class cx cy w h, normalised) and ``data.yaml``;
- ``voc``: ``Annotations/<capture>.xml`` (Pascal VOC);
- ``semantic``: ``Segmentation_labels/<capture>.png`` (0 background, UMS id + 1: the MSRS convention).
- ``msrs``: what ``tsjnet train --data`` reads: ``ir/``, ``vi/``, ``Segmentation_labels/`` in MSRS's
  9-class ids (``labels/mappings.yaml`` ums->msrs-seg), YOLO boxes in ``labels/`` (UMS ids,
  ``classes.txt``) and the split lists ``train.txt``/``val.txt``/``test.txt`` from ``ums split``.
Every export also gets ``metadata.jsonl`` (the manifest lines; ``redact`` strips GPS and serial
numbers), the split lists, and a dataset card (``README.md`` with plots and a grid of labelled pairs).
Labels tagged ``reject``, and captures rejected in review, are left out.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

import cv2
import numpy as np
import yaml

from ums.stages import ALIGN as ALIGN_STAGE
from ums.stages import EXPORT
from ums.stages import REVIEW as REVIEW_STAGE
from ums.atomic import write_image, write_text
from ums.masks import decode_rle, semantic_map
from ums.dataset_card import write_metadata_and_card, write_msrs
from ums.records import CaptureRecord, LabelRecord
from ums.taxonomy import load_taxonomy
from ums.workspace import Workspace

FORMATS = ("msrs", "coco", "yolo", "voc", "semantic")
PAIR_FOLDERS = {"msrs": ("ir", "vi")}


@dataclass
class ExportedPair:
    capture: CaptureRecord
    infrared: str  # relative to the export folder
    visible: str
    size: tuple[int, int]  # width, height
    labels: list[LabelRecord]


def export_workspace(workspace: Workspace, out: str | Path, fmt: str, redact: bool = False) -> dict[str, int]:
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    out = Path(out)
    with workspace.recorded_run(EXPORT, {"out": str(out.resolve()), "format": fmt, "redact": redact}) as summary:
        counts = _export(workspace, out, fmt, redact)
        summary.update(counts)
    return counts


def _export(workspace: Workspace, out: Path, fmt: str, redact: bool) -> dict[str, int]:
    # ultralytics finds labels by swapping /images/ for /labels/ in an image's path
    pairs = _copy_pairs(workspace, out, out / "images" if fmt == "yolo" else out,
                        PAIR_FOLDERS.get(fmt, ("infrared", "visible")))
    if fmt == "msrs":
        write_msrs(pairs, out)
    else:
        {"coco": _coco, "yolo": _yolo, "voc": _voc, "semantic": _semantic}[fmt](pairs, out)
    write_metadata_and_card(workspace, pairs, out, redact, fmt)  # next to every export
    return {"pairs": len(pairs), "labels": sum(len(p.labels) for p in pairs)}


def _copy_pairs(workspace: Workspace, out: Path, image_root: Path, folders: tuple[str, str]) -> list[ExportedPair]:
    pairs = []
    for capture, aligned in workspace.captures_with(ALIGN_STAGE):
        if "reject" in (workspace.stage_result(capture.capture_id, REVIEW_STAGE) or {}).get("tags", []):
            continue
        labels = [label for label in workspace.labels(capture.capture_id) if not label.excluded]
        names = {}
        for modality, key in zip(folders, ("ir", "vis")):
            target = image_root / modality / f"{capture.capture_id}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(workspace.absolute(aligned["files"][key]), target)
            names[modality] = str(target.relative_to(out))
        height, width = cv2.imread(str(out / names[folders[0]]), cv2.IMREAD_GRAYSCALE).shape
        pairs.append(ExportedPair(capture, names[folders[0]], names[folders[1]], (width, height), labels))
    return pairs


def _coco(pairs: list[ExportedPair], out: Path) -> None:
    taxonomy = load_taxonomy("ums")
    images, annotations = [], []
    for image_id, pair in enumerate(pairs, start=1):
        width, height = pair.size
        images.append({"id": image_id, "file_name": pair.infrared, "visible_file_name": pair.visible,
                       "width": width, "height": height, "capture_id": pair.capture.capture_id})
        for label in pair.labels:
            x0, y0, x1, y1 = label.box
            annotation = {"id": len(annotations) + 1, "image_id": image_id, "category_id": label.class_id + 1,
                          "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0,
                          "score": label.score, "source": label.source, "reviewed": label.reviewed}
            if label.mask:
                annotation["segmentation"] = label.mask
                annotation["area"] = float(decode_rle(label.mask).sum())
            annotations.append(annotation)
    categories = [{"id": c.id + 1, "name": c.name} for c in taxonomy.classes]
    write_text(out / "annotations.json", json.dumps({"images": images, "annotations": annotations,
                                                     "categories": categories}))


def _yolo(pairs: list[ExportedPair], out: Path) -> None:
    for pair in pairs:
        width, height = pair.size
        lines = []
        for label in pair.labels:
            x0, y0, x1, y1 = label.box
            lines.append(f"{label.class_id} {(x0 + x1) / 2 / width:.6f} {(y0 + y1) / 2 / height:.6f} "
                         f"{(x1 - x0) / width:.6f} {(y1 - y0) / height:.6f}")
        for modality in ("infrared", "visible"):
            write_text(out / "labels" / modality / f"{pair.capture.capture_id}.txt",
                       "\n".join(lines) + ("\n" if lines else ""))
    names = load_taxonomy("ums").names
    write_text(out / "data.yaml", yaml.safe_dump({"path": str(out.resolve()), "train": "images/infrared",
                                                  "val": "images/infrared",
                                                  "names": names}, sort_keys=False))


def _voc(pairs: list[ExportedPair], out: Path) -> None:
    names = load_taxonomy("ums").names
    for pair in pairs:
        width, height = pair.size
        root = ElementTree.Element("annotation")
        ElementTree.SubElement(root, "filename").text = pair.infrared
        size = ElementTree.SubElement(root, "size")
        for tag, value in (("width", width), ("height", height), ("depth", 1)):
            ElementTree.SubElement(size, tag).text = str(value)
        for label in pair.labels:
            obj = ElementTree.SubElement(root, "object")
            ElementTree.SubElement(obj, "name").text = names[label.class_id]
            ElementTree.SubElement(obj, "difficult").text = "0"
            box = ElementTree.SubElement(obj, "bndbox")
            # VOC boxes are 1-based inclusive pixel indices
            for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), label.box):
                ElementTree.SubElement(box, tag).text = str(int(round(value + (1 if tag.endswith("min") else 0))))
        write_text(out / "Annotations" / f"{pair.capture.capture_id}.xml",
                   ElementTree.tostring(root, encoding="unicode"))


def _semantic(pairs: list[ExportedPair], out: Path) -> None:
    for pair in pairs:
        width, height = pair.size
        with_masks = [label for label in pair.labels if label.mask]
        masks = np.array([decode_rle(label.mask) for label in with_masks]).reshape(-1, height, width)
        semantic = semantic_map(masks, np.array([label.class_id for label in with_masks]),
                                np.array([label.score if label.score is not None else 1.0 for label in with_masks]),
                                (height, width))
        write_image(out / "Segmentation_labels" / f"{pair.capture.capture_id}.png", semantic)
