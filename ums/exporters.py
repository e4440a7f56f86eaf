"""One class per export format, each filling in the hooks of one driver loop (``ums.export``).

The driver copies each pair's two images (to the folders ``image_folder`` names), hands the pair to
``export_pair``, and at the end calls ``close`` with every pair: a format writes per pair what is
per pair and in ``close`` what spans pairs. It never copies images or touches the workspace.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar
from xml.etree import ElementTree

import numpy as np
import yaml

from ums.core.atomic import write_image, write_text
from ums.masks import decode_rle, semantic_map
from ums.split import SPLITS
from ums.taxonomy import load_mapping, load_taxonomy

MODALITIES = {"infrared": "data.yaml", "visible": "data-visible.yaml"}  # YOLO: one data yaml per modality


class Exporter:
    """A format: where the pair images go, what is written per pair, what at the end."""

    name: ClassVar[str]
    pair_folders: ClassVar[tuple[str, str]] = ("infrared", "visible")  # thermal first, then visible
    per_split: ClassVar[bool] = False  # whether its files are per split (else only the split lists say)

    def __init__(self, out: Path):
        self.out = out

    def image_folder(self, modality: str, split: str) -> Path:
        return Path(modality)

    def setup(self) -> None:
        """Before the first pair."""

    def export_pair(self, pair) -> None:
        """One pair, its images already in place (``pair.infrared``, ``pair.visible``, ``pair.size``)."""

    def close(self, pairs: list) -> None:
        """After the last pair."""


def yolo_lines(pair) -> list[str]:
    width, height = pair.size
    return [f"{label.class_id} {(label.box[0] + label.box[2]) / 2 / width:.6f} {(label.box[1] + label.box[3]) / 2 / height:.6f} "
            f"{(label.box[2] - label.box[0]) / width:.6f} {(label.box[3] - label.box[1]) / height:.6f}" for label in pair.labels]


def masks_of(pair) -> tuple[list, np.ndarray]:
    """The pair's labels that have masks, and those masks as one (N, H, W) array."""
    width, height = pair.size
    with_masks = [label for label in pair.labels if label.mask]
    return with_masks, np.array([decode_rle(label.mask) for label in with_masks]).reshape(-1, height, width)


def scores_of(labels) -> np.ndarray:
    return np.array([label.score if label.score is not None else 1.0 for label in labels])


class CocoExporter(Exporter):
    """``annotations/instances_<split>.json`` per split (boxes and RLE masks; category id = UMS class
    id + 1; image ids unique across the files) and ``annotations.json`` with every split."""

    name = "coco"
    per_split = True

    def setup(self) -> None:
        self.images: list[dict] = []
        self.annotations: list[dict] = []

    def export_pair(self, pair) -> None:
        width, height = pair.size
        image_id = len(self.images) + 1
        self.images.append({"id": image_id, "file_name": pair.infrared, "visible_file_name": pair.visible,
                            "width": width, "height": height, "capture_id": pair.capture.capture_id,
                            "split": pair.layout_split})
        for label in pair.labels:
            x0, y0, x1, y1 = label.box
            annotation = {"id": len(self.annotations) + 1, "image_id": image_id, "category_id": label.class_id + 1,
                          "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0,
                          "score": label.score, "source": label.source, "reviewed": label.reviewed}
            if label.mask:
                annotation["segmentation"] = label.mask
                annotation["area"] = float(decode_rle(label.mask).sum())
            self.annotations.append(annotation)

    def close(self, pairs: list) -> None:
        categories = [{"id": c.id + 1, "name": c.name} for c in load_taxonomy("ums").classes]
        write_text(self.out / "annotations.json", json.dumps({"images": self.images, "annotations": self.annotations,
                                                              "categories": categories}))
        for split in SPLITS:  # every split's file, even an empty one, so a training config never names a missing file
            ids = {image["id"] for image in self.images if image["split"] == split}
            write_text(self.out / "annotations" / f"instances_{split}.json", json.dumps({
                "images": [image for image in self.images if image["id"] in ids],
                "annotations": [annotation for annotation in self.annotations if annotation["image_id"] in ids],
                "categories": categories}))


class YoloExporter(Exporter):
    """``labels/<modality>/<split>/<capture>.txt`` (class cx cy w h, normalised) beside
    ``images/<modality>/<split>/``, and ``data.yaml`` (infrared) / ``data-visible.yaml``."""

    name = "yolo"
    per_split = True

    def image_folder(self, modality: str, split: str) -> Path:
        # ultralytics finds labels by swapping /images/ for /labels/, and reads a split from a folder
        return Path("images", modality, split)

    def setup(self) -> None:
        for split in SPLITS:  # an empty split is an empty folder: ultralytics' dataset check wants it to exist
            for modality in MODALITIES:
                (self.out / "images" / modality / split).mkdir(parents=True, exist_ok=True)

    def export_pair(self, pair) -> None:
        lines = yolo_lines(pair)
        for modality in MODALITIES:
            write_text(self.out / "labels" / modality / pair.layout_split / f"{pair.capture.capture_id}.txt",
                       "\n".join(lines) + ("\n" if lines else ""))

    def close(self, pairs: list) -> None:
        self._remove_stale_split_files(pairs)
        for modality, name in MODALITIES.items():
            write_text(self.out / name, yaml.safe_dump(yolo_data([modality]), sort_keys=False))

    def _remove_stale_split_files(self, pairs: list) -> None:
        """A capture that ``ums split`` moved, or review rejected, since an earlier export into this folder
        would otherwise stay in its old split folder: in two splits at once, or trained on after its rejection."""
        current = {(pair.layout_split, pair.capture.capture_id) for pair in pairs}
        for kind, suffix in (("images", ".png"), ("labels", ".txt")):
            for modality in MODALITIES:
                for split in SPLITS:
                    for path in (self.out / kind / modality / split).glob(f"*{suffix}"):
                        if (split, path.stem) not in current:
                            path.unlink()


def yolo_data(modalities: list[str], root: str = "") -> dict:
    """An ultralytics dataset yaml of the YOLO layout: per split the image folders of ``modalities``
    under ``root`` (several folders form one set, as ultralytics reads a list), and the UMS names.

    No ``path``: ultralytics and FiftyOne then resolve the folders against the yaml's own folder, so an
    export can be moved, and two exports of one workspace are byte-identical wherever they are written."""
    data: dict = {}
    for split in SPLITS:
        folders = [f"{root}images/{modality}/{split}" for modality in modalities]
        data[split] = folders[0] if len(folders) == 1 else folders
    return {**data, "names": load_taxonomy("ums").names}


class VocExporter(Exporter):
    """``Annotations/<capture>.xml`` (Pascal VOC: 1-based inclusive pixel boxes)."""

    name = "voc"

    def setup(self) -> None:
        self.names = load_taxonomy("ums").names

    def export_pair(self, pair) -> None:
        width, height = pair.size
        root = ElementTree.Element("annotation")
        ElementTree.SubElement(root, "filename").text = pair.infrared
        size = ElementTree.SubElement(root, "size")
        for tag, value in (("width", width), ("height", height), ("depth", 1)):
            ElementTree.SubElement(size, tag).text = str(value)
        for label in pair.labels:
            obj = ElementTree.SubElement(root, "object")
            ElementTree.SubElement(obj, "name").text = self.names[label.class_id]
            ElementTree.SubElement(obj, "difficult").text = "0"
            box = ElementTree.SubElement(obj, "bndbox")
            for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), label.box):
                ElementTree.SubElement(box, tag).text = str(int(round(value + (1 if tag.endswith("min") else 0))))
        write_text(self.out / "Annotations" / f"{pair.capture.capture_id}.xml", ElementTree.tostring(root, encoding="unicode"))


class SemanticExporter(Exporter):
    """``Segmentation_labels/<capture>.png``: 0 background, UMS id + 1 (the MSRS convention)."""

    name = "semantic"

    def export_pair(self, pair) -> None:
        width, height = pair.size
        labels, masks = masks_of(pair)
        semantic = semantic_map(masks, np.array([label.class_id for label in labels]), scores_of(labels), (height, width))
        write_image(self.out / "Segmentation_labels" / f"{pair.capture.capture_id}.png", semantic)


class MsrsExporter(Exporter):
    """What ``tsjnet train --data`` reads: ``ir/``, ``vi/``, ``Segmentation_labels/`` in MSRS's 9-class
    ids (``labels/mappings.yaml`` ums->msrs-seg), YOLO boxes in ``labels/`` (UMS ids, ``classes.txt``)."""

    name = "msrs"
    pair_folders = ("ir", "vi")

    def setup(self) -> None:
        self.to_msrs = load_mapping("ums", "msrs-seg")

    def export_pair(self, pair) -> None:
        width, height = pair.size
        capture_id = pair.capture.capture_id
        labels, masks = masks_of(pair)
        msrs_ids = np.array([self.to_msrs(label.class_id) for label in labels], dtype=np.int64)
        # semantic_map paints id + 1, so hand it MSRS ids - 1
        semantic = semantic_map(masks, msrs_ids - 1, scores_of(labels), (height, width))
        write_image(self.out / "Segmentation_labels" / f"{capture_id}.png", semantic)
        lines = yolo_lines(pair)
        write_text(self.out / "labels" / f"{capture_id}.txt", "\n".join(lines) + ("\n" if lines else ""))

    def close(self, pairs: list) -> None:
        names = load_taxonomy("ums").names
        write_text(self.out / "classes.txt", "\n".join(names[i] for i in sorted(names)) + "\n")


EXPORTERS: dict[str, type[Exporter]] = {exporter.name: exporter for exporter in
                                         (MsrsExporter, CocoExporter, YoloExporter, VocExporter, SemanticExporter)}
