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

An export first deletes the temporaries that killed writers (``.<name>.<pid>.tmp``, :mod:`ums.core.atomic`) left in
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

import cv2

from ums.core.stage_names import ALIGN as ALIGN_STAGE
from ums.core.stage_names import EXPORT
from ums.core.stage_names import REVIEW as REVIEW_STAGE
from ums.core.stage_names import SPLIT as SPLIT_STAGE
from ums.core.atomic import TEMP_SUFFIX, remove_stale_temporaries, temporary_path, write_text
from ums.dataset_card import write_metadata_and_card
from ums.exporters import EXPORTERS, Exporter
from ums.core.progress import progress_bar
from ums.core.records import CaptureRecord, Issue, LabelRecord
from ums.split import SPLITS
from ums.core.workspace import Workspace

FORMATS = tuple(EXPORTERS)
EXPORT_MARK = ".ums-export.json"  # which workspace and format a folder holds an export of


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
                     overwrite: bool = False, show_progress: bool = False) -> ExportReport:
    """Export into ``out``; raises :class:`ExportError` for a folder it must not write into and
    :class:`NothingToExport` when no pair would be exported (both before anything is written)."""
    exporter_of(fmt)  # an unknown format fails before anything is checked or written
    out = Path(out)
    check_destination(workspace, out, fmt, overwrite)
    if not _exportable(workspace):
        raise NothingToExport(_nothing_to_export(workspace))
    with workspace.recorded_run(EXPORT, {"out": str(out.resolve()), "format": fmt, "redact": redact}) as summary:
        cleared = clear_folder(out) if overwrite else 0
        write_text(out / EXPORT_MARK, json.dumps(export_mark(workspace, fmt), sort_keys=True) + "\n")
        report = ExportReport(out, fmt, removed_temporaries=len(remove_stale_temporaries(out, only_dead_writers=True)),
                              cleared=cleared)
        _export(workspace, out, fmt, redact, report, show_progress)
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


def _export(workspace: Workspace, out: Path, fmt: str, redact: bool, report: ExportReport, show_progress: bool = False) -> None:
    """The whole workspace through the one driver loop, then the card and the report's counts."""
    pairs = write_pairs(workspace, out, fmt, workspace_pairs(workspace), show_progress)
    write_metadata_and_card(workspace, pairs, out, redact, fmt)  # next to every export
    report.pairs, report.labels = len(pairs), sum(len(p.labels) for p in pairs)
    for split in (*SPLITS, None):
        count = sum(pair.split == split for pair in pairs)
        if count or split is not None:
            report.splits[split or "unsplit"] = count
    report.issues.extend(_split_warnings(pairs, exporter_of(fmt).per_split))


@dataclass
class PairToExport:
    """What the driver loop writes for one capture: its aligned pair, the labels and the split to write."""

    capture: CaptureRecord
    aligned: dict  # the align stage's result (``files``: ``ir``, ``vis``)
    labels: list[LabelRecord]
    split: str | None  # None: not split yet (train in the per-split layouts)


def workspace_pairs(workspace: Workspace) -> list[PairToExport]:
    """What ``ums export`` writes: every aligned capture review has not rejected, with its labels
    that are not rejected or deleted, in the split ``ums split`` chose."""
    pairs = []
    for capture, aligned in _exportable(workspace):
        labels = [label for label in workspace.labels(capture.capture_id) if not label.excluded]
        pairs.append(PairToExport(capture, aligned, labels, split_of(workspace, capture.capture_id)))
    return pairs


def split_of(workspace: Workspace, capture_id: str) -> str | None:
    """The split ``ums split`` placed a capture in; None when it has not placed it."""
    split = (workspace.stage_result(capture_id, SPLIT_STAGE) or {}).get("split")
    return split if split in SPLITS else None


def exporter_of(fmt: str) -> type[Exporter]:
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    return EXPORTERS[fmt]


def write_pairs(workspace: Workspace, out: Path, fmt: str, selected: list[PairToExport],
                show_progress: bool = False) -> list[ExportedPair]:
    """The one driver loop: each pair's images copied, then handed to the format's exporter.

    ``ums export`` hands it the whole workspace; ``ums train-detector`` its reviewed pairs. It neither
    checks ``out`` (the caller's rule) nor writes a card."""
    exporter = exporter_of(fmt)(out)
    exporter.setup()
    pairs = []
    for chosen in progress_bar(selected, f"export ({fmt})", show_progress):
        pair = _copy_pair(workspace, chosen, out, exporter)
        exporter.export_pair(pair)
        pairs.append(pair)
    exporter.close(pairs)
    return pairs


def _split_warnings(pairs: list[ExportedPair], per_split: bool) -> list[Issue]:
    if not pairs:
        return []
    warnings = []
    unsplit = sum(pair.split is None for pair in pairs)
    if unsplit:
        where = "exported as train" if per_split else "in unsplit.txt, in no split list"
        warnings.append(f"{unsplit} of {len(pairs)} captures are not split yet: {where}; run `ums split` first")
    for split in SPLITS[1:]:
        if not any(pair.split == split for pair in pairs):
            warnings.append(f"{split} is empty: no exported capture is in it")
    return [Issue(stage=EXPORT, level="warning", message=message) for message in warnings]


def _copy_pair(workspace: Workspace, chosen: PairToExport, out: Path, exporter: Exporter) -> ExportedPair:
    capture = chosen.capture
    pair = ExportedPair(capture, "", "", (0, 0), chosen.labels, chosen.split)
    names = []
    for modality, key in zip(exporter.pair_folders, ("ir", "vis")):
        target = out / exporter.image_folder(modality, pair.layout_split) / f"{capture.capture_id}.png"
        _copy(workspace.absolute(chosen.aligned["files"][key]), target)
        names.append(str(target.relative_to(out)))
    pair.infrared, pair.visible = names
    height, width = cv2.imread(str(out / pair.infrared), cv2.IMREAD_GRAYSCALE).shape
    pair.size = (width, height)
    return pair


def _copy(source: Path, target: Path) -> None:
    """A killed copy leaves a temporary, never a truncated image under the real name."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(target)
    shutil.copyfile(source, temporary)
    os.replace(temporary, target)
