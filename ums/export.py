"""``ums export``: the workspace's aligned pairs and labels in standard formats.

Every format writes the pair images (``infrared/<capture>.png``, ``visible/<capture>.png``, both on
the aligned thermal grid, so one set of labels serves both; ``images/<modality>/<split>/`` for YOLO) and the labels:
- ``coco``: ``annotations/instances_<split>.json`` per split of ``ums split`` (boxes and RLE masks; category
  id = UMS class id + 1; image ids unique across the files) and ``annotations.json`` with every split, for
  browsing the whole set;
- ``yolo``: ``labels/<modality>/<split>/<capture>.txt`` (class cx cy w h, normalised), ``data.yaml``
  (infrared) and ``data-visible.yaml`` with ``train``/``val``/``test`` folders relative to the yaml (a rerun
  into the same folder removes captures that left a split since);
- ``voc``: ``Annotations/<capture>.xml`` (Pascal VOC);
- ``semantic``: ``Segmentation_labels/<capture>.png`` (0 background, UMS id + 1: the MSRS convention).
- ``msrs``: what ``tsjnet train --data`` reads: ``ir/``, ``vi/``, ``Segmentation_labels/`` in MSRS's
  9-class ids (``labels/mappings.yaml`` ums->msrs-seg), YOLO boxes in ``labels/`` (UMS ids,
  ``classes.txt``) and the split lists ``train.txt``/``val.txt``/``test.txt`` from ``ums split``.
Every export also gets ``metadata.jsonl`` (the manifest lines; ``redact`` strips GPS and serial
numbers), the split lists, and a dataset card (``README.md`` with plots and a grid of labelled pairs).
Labels tagged ``reject``, and captures rejected in review, are left out. Captures ``ums split`` has not
placed yet go to train in the YOLO and COCO layouts (so nothing is dropped) with a warning; the split lists
name them in ``unsplit.txt``. Warnings are recorded as issues of stage ``export``.

An export first deletes the temporaries that killed writers (``.<name>.<pid>.tmp``, :mod:`ums.atomic`) left in
the folder, so a rerun after a crash equals a clean export.

The folder must be new, empty, or an earlier export of the same workspace in the same format (its first
file, ``.ums-export.json``, says so, even when that export was killed): anything else would merge two
datasets or two layouts into one. ``overwrite`` deletes what the folder holds first. The workspace's own
folder, a folder inside it and a folder holding it are always refused.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

import cv2
import numpy as np
import yaml

from ums.stages import ALIGN as ALIGN_STAGE
from ums.stages import EXPORT
from ums.stages import REVIEW as REVIEW_STAGE
from ums.stages import SPLIT as SPLIT_STAGE
from ums.atomic import TEMP_SUFFIX, remove_stale_temporaries, temporary_path, write_image, write_text
from ums.masks import decode_rle, semantic_map
from ums.dataset_card import write_metadata_and_card, write_msrs
from ums.records import CaptureRecord, Issue, LabelRecord
from ums.split import SPLITS
from ums.taxonomy import load_taxonomy
from ums.workspace import Workspace

FORMATS = ("msrs", "coco", "yolo", "voc", "semantic")
EXPORT_MARK = ".ums-export.json"  # which workspace and format a folder holds an export of
PAIR_FOLDERS = {"msrs": ("ir", "vi")}
SPLIT_LAYOUTS = ("coco", "yolo")  # the formats whose files are per split; the others only list the splits
MODALITIES = {"infrared": "data.yaml", "visible": "data-visible.yaml"}  # YOLO: one data yaml per modality


class ExportError(ValueError):
    """A folder the export will not write into; the message says what to do instead."""


class NothingToExport(RuntimeError):
    """No pair to export: nothing is aligned, or review rejected every aligned capture."""


@dataclass
class ExportedPair:
    capture: CaptureRecord
    infrared: str  # relative to the export folder
    visible: str
    size: tuple[int, int]  # width, height
    labels: list[LabelRecord]
    split: str | None = None  # what `ums split` chose; None: not split yet

    @property
    def layout_split(self) -> str:
        """The split whose files hold this pair in the per-split layouts: unsplit pairs count as train."""
        return self.split or "train"


@dataclass
class ExportReport:
    out: Path
    format: str
    pairs: int = 0
    labels: int = 0
    splits: dict[str, int] = field(default_factory=dict)  # pairs per split, unsplit ones under "unsplit"
    removed_temporaries: int = 0
    cleared: int = 0  # entries ``overwrite`` deleted first
    issues: list[Issue] = field(default_factory=list)

    def rows(self) -> list[tuple[str, object]]:
        return [("pairs", self.pairs), ("labels", self.labels),
                ("pairs per split", ", ".join(f"{k}: {v}" for k, v in self.splits.items()) or "-"),
                ("stale temporaries removed", self.removed_temporaries), ("warnings", len(self.issues))]


def export_workspace(workspace: Workspace, out: str | Path, fmt: str, redact: bool = False,
                     overwrite: bool = False) -> ExportReport:
    """Export into ``out``; raises :class:`ExportError` for a folder it must not write into and
    :class:`NothingToExport` when no pair would be exported (both before anything is written)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    out = Path(out)
    check_destination(workspace, out, fmt, overwrite)
    if not _exportable(workspace):
        raise NothingToExport(_nothing_to_export(workspace))
    with workspace.recorded_run(EXPORT, {"out": str(out.resolve()), "format": fmt, "redact": redact}) as summary:
        cleared = clear_folder(out) if overwrite else 0
        write_text(out / EXPORT_MARK, json.dumps(export_mark(workspace, fmt), sort_keys=True) + "\n")
        report = ExportReport(out, fmt, removed_temporaries=len(remove_stale_temporaries(out, only_dead_writers=True)),
                              cleared=cleared)
        _export(workspace, out, fmt, redact, report)
        workspace.replace_issues(EXPORT, "workspace", report.issues)
        summary.update(report.rows())
        summary["warnings"] = [issue.message for issue in report.issues]
    return report


def export_mark(workspace: Workspace, fmt: str) -> dict[str, str]:
    return {"workspace": str(workspace.root.resolve()), "format": fmt}


def check_destination(workspace: Workspace, out: Path, fmt: str, overwrite: bool) -> None:
    """Refuse a folder whose contents an export would silently mix with, or delete, other data."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} is a file, not a folder (name a new or empty folder for the export)")
    target, root = out.resolve(), workspace.root.resolve()
    elsewhere = root.parent / f"{root.name}-export"
    if target == root or root in target.parents:
        raise ExportError(f"{out} is inside the workspace {root} (export to a folder outside it, e.g. {elsewhere})")
    if target in root.parents:
        raise ExportError(f"{out} holds the workspace {root} (export to a folder of its own, e.g. {elsewhere})")
    if not _holds_anything(out):
        return
    if overwrite:
        home = Path.home().resolve()
        if target == home or target in home.parents:
            raise ExportError(f"--overwrite would delete everything in {out} (name a folder of the export's own)")
        return
    if _earlier_export(workspace, out, fmt):
        return
    raise ExportError(f"{out} is not empty and {_what_is_there(workspace, out, fmt)} (choose a new or empty folder, "
                      "or add --overwrite to delete what it holds first)")


def _holds_anything(out: Path) -> bool:
    """Whether ``out`` holds more than the temporaries of a killed export (which may have died
    writing its very first file, the mark)."""
    if not out.exists():
        return False
    return any(not (entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX)) for entry in out.iterdir())


def _read_mark(out: Path) -> dict | None:
    try:
        mark = json.loads((out / EXPORT_MARK).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return mark if isinstance(mark, dict) else None


def _earlier_export(workspace: Workspace, out: Path, fmt: str) -> bool:
    """An export of this workspace in this format: marked so, or written before exports were marked
    (its dataset card names the format and every capture it lists is one of the workspace's)."""
    mark = _read_mark(out)
    if mark is not None:
        return mark == export_mark(workspace, fmt)
    try:
        card = (out / "README.md").read_text(encoding="utf-8")
        listed = [json.loads(line)["capture_id"] for line in (out / "metadata.jsonl").read_text(encoding="utf-8").splitlines()]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    known = {capture.capture_id for capture in workspace.captures()}
    return card.startswith("# UMS dataset export") and f"--format {fmt}`" in card and bool(listed) and set(listed) <= known


def _what_is_there(workspace: Workspace, out: Path, fmt: str) -> str:
    mark = _read_mark(out)
    if mark is None:
        return "is no ums export"
    if mark.get("workspace") != str(workspace.root.resolve()):
        return f"holds an export of another workspace ({mark.get('workspace')})"
    return f"holds a {mark.get('format')} export of this workspace, which a {fmt} export would mix with"


def clear_folder(out: Path) -> int:
    """Delete what ``out`` holds (links themselves, never what they point to); the number of entries."""
    if not out.exists():
        return 0
    entries = list(out.iterdir())
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return len(entries)


def _exportable(workspace: Workspace) -> list[tuple[CaptureRecord, dict]]:
    """The aligned captures review has not rejected."""
    return [(capture, aligned) for capture, aligned in workspace.captures_with(ALIGN_STAGE)
            if "reject" not in (workspace.stage_result(capture.capture_id, REVIEW_STAGE) or {}).get("tags", [])]


def _nothing_to_export(workspace: Workspace) -> str:
    aligned = len(workspace.captures_with(ALIGN_STAGE))
    if not aligned:
        return (f"nothing to export: no capture in {workspace.root} is aligned yet (run `ums crop`, then `ums align`, "
                "on this workspace first)")
    return (f"nothing to export: review rejected all {aligned} aligned captures (take the reject tag off in "
            "`ums review`, then run `ums review --sync`)")


def _export(workspace: Workspace, out: Path, fmt: str, redact: bool, report: ExportReport) -> None:
    pairs = _copy_pairs(workspace, out, fmt)
    if fmt == "msrs":
        write_msrs(pairs, out)
    else:
        {"coco": _coco, "yolo": _yolo, "voc": _voc, "semantic": _semantic}[fmt](pairs, out)
    write_metadata_and_card(workspace, pairs, out, redact, fmt)  # next to every export
    report.pairs, report.labels = len(pairs), sum(len(p.labels) for p in pairs)
    for split in (*SPLITS, None):
        count = sum(pair.split == split for pair in pairs)
        if count or split is not None:
            report.splits[split or "unsplit"] = count
    report.issues.extend(_split_warnings(pairs, fmt))


def _split_warnings(pairs: list[ExportedPair], fmt: str) -> list[Issue]:
    if not pairs:
        return []
    warnings = []
    unsplit = sum(pair.split is None for pair in pairs)
    if unsplit:
        where = "exported as train" if fmt in SPLIT_LAYOUTS else "in unsplit.txt, in no split list"
        warnings.append(f"{unsplit} of {len(pairs)} captures are not split yet: {where}; run `ums split` first")
    for split in SPLITS[1:]:
        if not any(pair.split == split for pair in pairs):
            warnings.append(f"{split} is empty: no exported capture is in it")
    return [Issue(stage=EXPORT, level="warning", message=message) for message in warnings]


def _copy_pairs(workspace: Workspace, out: Path, fmt: str) -> list[ExportedPair]:
    folders = PAIR_FOLDERS.get(fmt, ("infrared", "visible"))
    pairs = []
    for capture, aligned in _exportable(workspace):
        labels = [label for label in workspace.labels(capture.capture_id) if not label.excluded]
        split = (workspace.stage_result(capture.capture_id, SPLIT_STAGE) or {}).get("split")
        pair = ExportedPair(capture, "", "", (0, 0), labels, split if split in SPLITS else None)
        names = {}
        for modality, key in zip(folders, ("ir", "vis")):
            # ultralytics finds labels by swapping /images/ for /labels/, and reads a split from a folder
            folder = Path("images", modality, pair.layout_split) if fmt == "yolo" else Path(modality)
            target = out / folder / f"{capture.capture_id}.png"
            _copy(workspace.absolute(aligned["files"][key]), target)
            names[modality] = str(target.relative_to(out))
        pair.infrared, pair.visible = names[folders[0]], names[folders[1]]
        height, width = cv2.imread(str(out / pair.infrared), cv2.IMREAD_GRAYSCALE).shape
        pair.size = (width, height)
        pairs.append(pair)
    return pairs


def _copy(source: Path, target: Path) -> None:
    """A killed copy leaves a temporary, never a truncated image under the real name."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(target)
    shutil.copyfile(source, temporary)
    os.replace(temporary, target)


def _coco(pairs: list[ExportedPair], out: Path) -> None:
    taxonomy = load_taxonomy("ums")
    images, annotations = [], []
    for image_id, pair in enumerate(pairs, start=1):
        width, height = pair.size
        images.append({"id": image_id, "file_name": pair.infrared, "visible_file_name": pair.visible,
                       "width": width, "height": height, "capture_id": pair.capture.capture_id,
                       "split": pair.layout_split})
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
    for split in SPLITS:  # every split's file, even an empty one, so a training config never names a missing file
        ids = {image["id"] for image in images if image["split"] == split}
        write_text(out / "annotations" / f"instances_{split}.json", json.dumps({
            "images": [image for image in images if image["id"] in ids],
            "annotations": [annotation for annotation in annotations if annotation["image_id"] in ids],
            "categories": categories}))


def _yolo(pairs: list[ExportedPair], out: Path) -> None:
    for split in SPLITS:  # an empty split is an empty folder: ultralytics' dataset check wants it to exist
        for modality in MODALITIES:
            (out / "images" / modality / split).mkdir(parents=True, exist_ok=True)
    for pair in pairs:
        width, height = pair.size
        lines = []
        for label in pair.labels:
            x0, y0, x1, y1 = label.box
            lines.append(f"{label.class_id} {(x0 + x1) / 2 / width:.6f} {(y0 + y1) / 2 / height:.6f} "
                         f"{(x1 - x0) / width:.6f} {(y1 - y0) / height:.6f}")
        for modality in MODALITIES:
            write_text(out / "labels" / modality / pair.layout_split / f"{pair.capture.capture_id}.txt",
                       "\n".join(lines) + ("\n" if lines else ""))
    _remove_stale_split_files(pairs, out)
    names = load_taxonomy("ums").names
    for modality, name in MODALITIES.items():
        # no `path`: ultralytics and FiftyOne then resolve the folders against the yaml's own folder, so the
        # export can be moved, and two exports of one workspace are byte-identical wherever they are written
        data = {split: f"images/{modality}/{split}" for split in SPLITS}
        write_text(out / name, yaml.safe_dump({**data, "names": names}, sort_keys=False))


def _remove_stale_split_files(pairs: list[ExportedPair], out: Path) -> None:
    """A capture that ``ums split`` moved, or review rejected, since an earlier export into this folder would
    otherwise stay in its old split folder: in two splits at once, or trained on after its rejection."""
    current = {(pair.layout_split, pair.capture.capture_id) for pair in pairs}
    for kind, suffix in (("images", ".png"), ("labels", ".txt")):
        for modality in MODALITIES:
            for split in SPLITS:
                for path in (out / kind / modality / split).glob(f"*{suffix}"):
                    if (split, path.stem) not in current:
                        path.unlink()


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
