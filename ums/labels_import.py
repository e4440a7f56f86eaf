"""``ums labels import``: existing annotations (COCO or YOLO) into the workspace as labels.

Every label lives on a capture's aligned thermal grid (the grid ``ums crop`` resamples to and ``ums export``
writes its images on), so a file is read as boxes on that grid: each image is matched to a capture by its
file name, each class is mapped to the UMS taxonomy through ``labels/mappings.yaml``. Human labels come in
protected; automatic ones replace the earlier unprotected labels of the same model on the captures the file
covers, and never add a box that repeats a human or reviewed one. Whatever is wrong in the file is an issue
naming it: one malformed entry refuses the whole file (nothing is written), an unknown image or class only
skips its labels. All database changes of one import are one transaction. ``docs/labels.md`` describes the
accepted formats and the matching rules.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from ums.detections import drop_repeats
from ums.core.records import Issue, LabelRecord
from ums.core.stage_names import CROP
from ums.taxonomy import DATASET_TAXONOMY, LABELS_DIR, load_mapping, load_taxonomy
from ums.core.workspace import INSERT_LABEL, Workspace, utc_now

STAGE = "labels"  # the stage name of the import's issues and of its hold on the writer lock
FORMATS = ("coco", "yolo")
SOURCES = ("human", "auto")
IMPORTED_MODEL = "imported"  # the model of automatic labels imported without one: a re-import replaces them
SAME_BOX_PX = 0.5  # a box this close, corner by corner, of the same class is the same label
MIN_SIDE_PX = 1.0  # narrower than one pixel of the grid: no object a detector or an annotator can see there
CLIP_TOLERANCE_PX = 0.01  # YOLO's six decimals overshoot the image edge by this much; that is not clipping
# per-modality score keys as tools write them -> the workspace's provenance keys
MODALITY_KEYS = {"visible": "visible", "rgb": "visible", "vis": "visible",
                 "infrared": "thermal", "thermal": "thermal", "ir": "thermal"}
YOLO_SPLITS = ("train", "val", "test", "minival")
NOT_LABEL_FILES = {"classes.txt"}

# why a label was not added (the report's rows)
UNKNOWN_IMAGE = "image matches no capture"
NO_GRID = "capture not cropped yet (no aligned grid)"
OTHER_SIZE = "image size differs from the aligned grid"
UNKNOWN_CLASS = "unknown class"
NO_COUNTERPART = "class without a UMS counterpart"
DEGENERATE = "box under 1 px once clipped"
DUPLICATE = "duplicate in the file"
PRESENT = "already in the workspace"
REPEAT = "repeats a human or reviewed label"


class LabelImportError(ValueError):
    """A file or an option the import cannot use at all; the message is one line naming it and what to do."""


class _Malformed(ValueError):
    """An entry of the file that does not say what its format says it must (caught per entry)."""


class _DryRun(Exception):
    """Rolls the import's transaction back after everything was decided."""


# -- what a file holds, before it meets the workspace ---------------------------------------------
@dataclass
class RawLabel:
    where: str  # where in the file ("annotation 7", "line 3"), for issues
    class_name: str | None  # None: a YOLO class index the names do not cover
    class_ref: str  # the class as the file writes it (a name or an index)
    box: tuple[float, float, float, float]  # x0, y0, x1, y1: pixels, or fractions of the image when normalised
    normalised: bool = False
    score: float | None = None
    provenance: dict[str, float] = field(default_factory=dict)
    segmentation: Any = None  # COCO RLE or polygons, checked when the grid is known


@dataclass
class RawImage:
    file: str  # the label file it came from
    name: str  # the image as the file names it, for issues
    names: list[str]  # what may name its capture, most specific first
    labels: list[RawLabel] = field(default_factory=list)
    size: tuple[int, int] | None = None  # width, height, when the file says


@dataclass
class ParsedFile:
    images: list[RawImage] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)  # every class the file declares
    issues: list[Issue] = field(default_factory=list)
    malformed: int = 0

    def bad(self, file: str | Path, message: str) -> None:
        self.issues.append(Issue(stage=STAGE, file=str(file), message=message))
        self.malformed += 1


# -- the report ------------------------------------------------------------------------------------
@dataclass
class ImportReport:
    path: Path
    format: str
    source: str
    model: str | None = None
    taxonomy: str = ""  # the file's classes, as given or detected
    dry_run: bool = False
    images: int = 0
    matched: int = 0  # images matched to a capture
    unknown_images: int = 0
    captures: set[str] = field(default_factory=set)
    labels_read: int = 0
    planned: int = 0  # labels that passed the file's checks (class, image, box)
    added: int = 0
    replaced: int = 0  # earlier automatic labels of the same model that the new ones replaced
    confirmed: int = 0  # automatic labels a human import repeated: now human
    clipped: int = 0
    malformed: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    per_class: Counter[str] = field(default_factory=Counter)  # labels added, by UMS class
    issues: list[Issue] = field(default_factory=list)

    @property
    def refused(self) -> bool:
        """A malformed entry refuses the whole file: nothing was written."""
        return self.malformed > 0

    def rows(self) -> list[tuple[str, object]]:
        source = f"{self.source} (model {self.model})" if self.model else self.source
        rows: list[tuple[str, object]] = [
            ("file", str(self.path)), ("format", self.format), ("source", source),
            ("classes", f"{self.taxonomy} -> ums" if self.taxonomy else "-"),
            ("images in the file", self.images), ("images matched to captures", self.matched),
            ("images unknown", self.unknown_images), ("captures", len(self.captures)),
            ("labels in the file", self.labels_read), ("labels added" + (" (dry run)" if self.dry_run else ""), self.added),
        ]
        optional = [("earlier automatic labels of this model replaced", self.replaced),
                    ("automatic labels confirmed as human", self.confirmed), ("boxes clipped to the image", self.clipped)]
        rows += [(name, count) for name, count in optional if count]
        rows += [(f"  skipped: {reason}", count) for reason, count in self.skipped.items()]
        rows += [(f"  {name}", count) for name, count in sorted(self.per_class.items())]
        if self.refused:
            rows.append(("written", f"nothing: {self.malformed} malformed entries (see the issues; fix the file and rerun)"))
        elif self.dry_run:
            rows.append(("written", "nothing (dry run)"))
        return rows

    def skip(self, reason: str, count: int = 1) -> None:
        if count:
            self.skipped[reason] += count


# -- the import ------------------------------------------------------------------------------------
def import_labels(workspace: Workspace, path: str | Path, fmt: str, source: str, model: str | None = None,
                  taxonomy: str | None = None, dry_run: bool = False) -> ImportReport:
    """Import the labels of ``path`` (``fmt`` coco or yolo) as ``source`` labels (human or auto).

    ``taxonomy`` names the ``labels/`` file of the file's classes (default: the one whose names the file
    uses). Raises :class:`LabelImportError` for a path or an option that cannot be used at all, before
    anything is written; everything else wrong in the file is an issue of the report. A workspace that cannot be
    written (busy, read-only, full disk) raises its :class:`~ums.core.workspace.WorkspaceError`, with nothing written."""
    path = Path(path)
    _check_options(path, fmt, source, taxonomy)
    if source == "auto":
        model = model or IMPORTED_MODEL
    report = ImportReport(path=path, format=fmt, source=source, model=model, dry_run=dry_run)
    parsed = read_coco(coco_file(path)) if fmt == "coco" else read_yolo(path, taxonomy)
    report.issues += parsed.issues
    report.malformed += parsed.malformed
    resolver = class_resolver(parsed.class_names, taxonomy)
    report.taxonomy = resolver.taxonomy
    # planned even when the file is refused: one pass lists everything to fix (masks are checked on the grid)
    planned = plan_labels(parsed.images, capture_index(workspace), resolver, report)
    if not report.refused and planned:
        store_labels(workspace, planned, report)
    return report


def _check_options(path: Path, fmt: str, source: str, taxonomy: str | None) -> None:
    if fmt not in FORMATS:
        raise LabelImportError(f"unknown label format {fmt!r}: choose from {', '.join(FORMATS)}")
    if source not in SOURCES:
        raise LabelImportError(f"unknown label source {source!r}: choose from {', '.join(SOURCES)}")
    if not path.exists():
        raise LabelImportError(f"{path} does not exist: name a {fmt.upper()} label file or folder")
    if taxonomy is not None:
        class_resolver([], taxonomy)  # an unknown taxonomy or mapping fails here, before the file is read


# -- COCO ------------------------------------------------------------------------------------------
def coco_file(path: Path) -> Path:
    """The JSON file itself, or ``annotations.json`` of a folder (what ``ums export --format coco`` writes)."""
    if not path.is_dir():
        return path
    if (path / "annotations.json").is_file():
        return path / "annotations.json"
    raise LabelImportError(f"{path} is a folder without annotations.json: name the COCO JSON file to import")


def read_coco(path: Path) -> ParsedFile:
    """A COCO dataset file (``images``, ``annotations``, ``categories``); every malformed entry an issue."""
    parsed = ParsedFile()
    document = _load_json(path, parsed)
    if document is None or not _coco_shape(path, document, parsed):
        return parsed
    categories = _coco_categories(path, document["categories"], parsed)
    images = _coco_images(path, document["images"], parsed)
    for index, annotation in enumerate(document["annotations"]):
        where = f"annotation {annotation.get('id', index + 1) if isinstance(annotation, dict) else index + 1}"
        try:
            image_id, label = _coco_annotation(where, annotation, categories, images)
        except _Malformed as exc:
            parsed.bad(path, f"{where}: {exc}")
            continue
        images[image_id].labels.append(label)
    parsed.images = list(images.values())
    parsed.class_names = list(categories.values())
    return parsed


def _load_json(path: Path, parsed: ParsedFile) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        parsed.bad(path, f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})")
    except UnicodeDecodeError:
        parsed.bad(path, "not a text file (not UTF-8): not a COCO JSON file")
    except OSError as exc:
        parsed.bad(path, f"cannot read it ({exc.strerror or exc})")
    return None


def _coco_shape(path: Path, document: Any, parsed: ParsedFile) -> bool:
    if isinstance(document, list):
        parsed.bad(path, "a list, not a COCO dataset: a detection results list names no image files or classes to match; "
                         "import the dataset file with 'images' and 'categories'")
        return False
    if not isinstance(document, dict):
        parsed.bad(path, "not a COCO dataset (a JSON object with 'images', 'annotations' and 'categories')")
        return False
    missing = [key for key in ("images", "annotations", "categories") if not isinstance(document.get(key), list)]
    for key in missing:
        parsed.bad(path, f"no {key!r} list: not a COCO dataset file")
    return not missing


def _coco_categories(path: Path, entries: list, parsed: ParsedFile) -> dict[Any, str]:
    categories: dict[Any, str] = {}
    for index, entry in enumerate(entries):
        if not (isinstance(entry, dict) and _is_id(entry.get("id")) and isinstance(entry.get("name"), str)):
            parsed.bad(path, f"category {index + 1}: needs an integer 'id' and a 'name'")
        elif entry["id"] in categories:
            parsed.bad(path, f"category {index + 1}: id {entry['id']} is used twice")
        else:
            categories[entry["id"]] = entry["name"]
    return categories


def _coco_images(path: Path, entries: list, parsed: ParsedFile) -> dict[Any, RawImage]:
    images: dict[Any, RawImage] = {}
    for index, entry in enumerate(entries):
        try:
            image_id, image = _coco_image(str(path), entry)
        except _Malformed as exc:
            parsed.bad(path, f"image {index + 1}: {exc}")
            continue
        if image_id in images:
            parsed.bad(path, f"image {index + 1}: id {image_id} is used twice")
            continue
        images[image_id] = image
    return images


def _coco_image(file: str, entry: Any) -> tuple[Any, RawImage]:
    if not isinstance(entry, dict) or not _is_id(entry.get("id")):
        raise _Malformed("needs an integer 'id'")
    # ums's own export names the capture; any other tool only the file
    names = [entry[key] for key in ("capture_id", "file_name", "visible_file_name") if isinstance(entry.get(key), str)]
    if not names:
        raise _Malformed("needs a 'file_name'")
    size = None
    if "width" in entry or "height" in entry:
        width, height = entry.get("width"), entry.get("height")
        if not (_is_id(width) and _is_id(height) and width > 0 and height > 0):
            raise _Malformed(f"width and height must be positive integers (got {width!r}, {height!r})")
        size = (width, height)
    shown = entry.get("file_name") if isinstance(entry.get("file_name"), str) else names[0]
    return entry["id"], RawImage(file=file, name=shown, names=names, size=size)


def _coco_annotation(where: str, entry: Any, categories: dict[Any, str], images: dict[Any, RawImage]) -> tuple[Any, RawLabel]:
    if not isinstance(entry, dict):
        raise _Malformed("not a JSON object")
    for key in ("image_id", "category_id", "bbox"):
        if key not in entry:
            raise _Malformed(f"no {key!r}")
    if not _is_id(entry["image_id"]) or entry["image_id"] not in images:
        raise _Malformed(f"image id {entry['image_id']!r} is not one of 'images'")
    if not _is_id(entry["category_id"]) or entry["category_id"] not in categories:
        raise _Malformed(f"category id {entry['category_id']!r} is not one of 'categories'")
    bbox = entry["bbox"]
    if not (isinstance(bbox, list) and len(bbox) == 4):
        raise _Malformed(f"'bbox' must be [x, y, width, height] (got {bbox!r})")
    x, y, width, height = (_finite(value, "bbox") for value in bbox)
    name = categories[entry["category_id"]]
    return entry["image_id"], RawLabel(
        where=where, class_name=name, class_ref=name, box=(x, y, x + width, y + height),
        score=_score(entry.get("score")), provenance=_provenance(entry.get("scores")),
        segmentation=entry.get("segmentation") or None)


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _finite(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _Malformed(f"{what} value {value!r} is not a finite number")
    return float(value)


def _score(value: Any) -> float | None:
    if value is None:
        return None
    score = _finite(value, "score")
    if not 0.0 <= score <= 1.0:
        raise _Malformed(f"score {score} is outside 0..1")
    return score


def _provenance(scores: Any) -> dict[str, float]:
    """``{"visible": s, "infrared": s}`` as the workspace keeps it (``thermal`` for infrared)."""
    if scores is None:
        return {}
    if not isinstance(scores, dict):
        raise _Malformed(f"'scores' must map modalities to scores (got {scores!r})")
    provenance = {}
    for key, value in scores.items():
        if key not in MODALITY_KEYS:
            raise _Malformed(f"'scores' names modality {key!r}; known: {', '.join(MODALITY_KEYS)}")
        provenance[MODALITY_KEYS[key]] = _score(value)
    return {key: value for key, value in provenance.items() if value is not None}


# -- YOLO ------------------------------------------------------------------------------------------
def read_yolo(path: Path, taxonomy: str | None) -> ParsedFile:
    """YOLO label files (``class cx cy w h [score]``, normalised) from a data yaml, a folder or one file."""
    parsed = ParsedFile()
    files, names = _yolo_sources(path, parsed)
    if parsed.malformed:
        return parsed
    if names is None:
        names = _taxonomy_names(path, taxonomy)
    if not files:
        raise LabelImportError(f"no YOLO label files (*.txt) found from {path}: name a data.yaml, a folder of label files "
                               "or one label file")
    parsed.class_names = list(names.values())
    for file in files:
        image = _yolo_file(file, names, parsed)
        if image is not None:
            parsed.images.append(image)
    return parsed


def _yolo_sources(path: Path, parsed: ParsedFile) -> tuple[list[Path], dict[int, str] | None]:
    """The label files to read and the class names, if the files come with any."""
    if path.is_dir() and (path / "data.yaml").is_file():
        return _yolo_data(path / "data.yaml", parsed)
    if path.is_dir():
        folder = path / "labels" if (path / "labels").is_dir() else path
        files = sorted(file for file in folder.rglob("*.txt") if file.name not in NOT_LABEL_FILES)
        return files, _classes_txt([path, path.parent], parsed)
    if path.suffix.lower() in (".yaml", ".yml"):
        return _yolo_data(path, parsed)
    return [path], _classes_txt([path.parent], parsed)


def _yolo_data(path: Path, parsed: ParsedFile) -> tuple[list[Path], dict[int, str] | None]:
    """An ultralytics data yaml: its ``names``, and the label folders beside its image folders."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        parsed.bad(path, f"not a readable YAML file ({str(exc).splitlines()[0]})")
        return [], None
    if not isinstance(data, dict) or "names" not in data:
        parsed.bad(path, "no 'names': not a YOLO data yaml")
        return [], None
    try:
        names = _names(data["names"])
    except _Malformed as exc:
        parsed.bad(path, str(exc))
        return [], None
    base = path.parent / data["path"] if isinstance(data.get("path"), str) else path.parent
    files: dict[Path, None] = {}  # ordered and each once: two splits may name one folder
    for split in YOLO_SPLITS:
        entries = data.get(split)
        if entries is not None and not (isinstance(entries, str) or
                                        (isinstance(entries, list) and all(isinstance(e, str) for e in entries))):
            parsed.bad(path, f"{split!r} must be a folder or a list of folders (got {entries!r})")
            continue
        for entry in [entries] if isinstance(entries, str) else entries or []:
            files.update(dict.fromkeys(_split_label_files(path, split, base / entry, parsed)))
    return list(files), names


def _names(value: Any) -> dict[int, str]:
    if isinstance(value, list) and all(isinstance(name, str) for name in value):
        return dict(enumerate(value))
    if isinstance(value, dict) and all(isinstance(name, str) for name in value.values()):
        try:
            return {int(key): name for key, name in value.items()}
        except (TypeError, ValueError):
            pass
    raise _Malformed(f"'names' must be a list of class names or a mapping id -> name (got {value!r})")


def _split_label_files(data_yaml: Path, split: str, images: Path, parsed: ParsedFile) -> list[Path]:
    """The label files of one split's image folder (``images`` swapped for ``labels``, as ultralytics finds them)."""
    labels = label_folder(images)
    if labels.is_dir():
        return sorted(file for file in labels.rglob("*.txt") if file.name not in NOT_LABEL_FILES)
    if images.is_file():
        parsed.issues.append(Issue(stage=STAGE, file=str(data_yaml), level="warning",
                                   message=f"{split}: {images} is a list of images, which is not read; name image folders"))
    elif not images.is_dir():
        parsed.issues.append(Issue(stage=STAGE, file=str(data_yaml), level="warning",
                                   message=f"{split}: neither {images} nor its labels folder {labels} exists"))
    return []  # an image folder without labels (an empty split) holds nothing to import


def label_folder(images: Path) -> Path:
    """Where ultralytics looks for the labels of the images in ``images``: its last ``images`` part made ``labels``."""
    parts = list(images.parts)
    if "images" not in parts:
        return images
    index = len(parts) - 1 - parts[::-1].index("images")
    parts[index] = "labels"
    return Path(*parts)


def _classes_txt(folders: Iterable[Path], parsed: ParsedFile) -> dict[int, str] | None:
    """The names of a ``classes.txt`` (one a line, the class id its line number from 0) in the first folder with one."""
    for folder in folders:
        file = folder / "classes.txt"
        if file.is_file():
            try:
                lines = file.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                parsed.bad(file, f"cannot read the class names ({exc})")
                return None
            return dict(enumerate(line.strip() for line in lines if line.strip()))
    return None


def _taxonomy_names(path: Path, taxonomy: str | None) -> dict[int, str]:
    if taxonomy is None:
        raise LabelImportError(f"{path} names no classes (no data.yaml or classes.txt): pass the taxonomy of its class "
                               "ids (e.g. --taxonomy ums or --taxonomy coco)")
    return load_taxonomy(taxonomy).names


def _yolo_file(file: Path, names: dict[int, str], parsed: ParsedFile) -> RawImage | None:
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        parsed.bad(file, f"cannot read it as a YOLO label file ({exc})")
        return None
    image = RawImage(file=str(file), name=file.name, names=[file.name])
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            image.labels.append(_yolo_line(f"line {number}", line.split(), names))
        except _Malformed as exc:
            parsed.bad(file, f"line {number}: {exc}")
    return image


def _yolo_line(where: str, columns: list[str], names: dict[int, str]) -> RawLabel:
    if len(columns) not in (5, 6):
        raise _Malformed(f"{len(columns)} columns, expected 5 (class cx cy w h) or 6 (class cx cy w h score)")
    class_id = _class_index(columns[0])
    cx, cy, width, height = (_finite(_number(text), "coordinate") for text in columns[1:5])
    score = _score(_number(columns[5])) if len(columns) == 6 else None
    return RawLabel(where=where, class_name=names.get(class_id), class_ref=str(class_id), normalised=True,
                    box=(cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2), score=score)


def _number(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text  # not a number: _finite says so, naming it


def _class_index(text: str) -> int:
    value = _number(text)
    if isinstance(value, float) and math.isfinite(value) and value == int(value) and value >= 0:
        return int(value)
    raise _Malformed(f"class {text!r} is not a class index (0, 1, ...)")


# -- classes ---------------------------------------------------------------------------------------
@dataclass
class ClassResolver:
    """The file's class names -> UMS class ids, through one taxonomy's mapping."""

    taxonomy: str
    targets: dict[str, int | None]  # the taxonomy's names -> UMS id; None: no counterpart (dropped)

    def resolve(self, label: RawLabel) -> tuple[int | None, str | None]:
        """The UMS class id, or None and why not."""
        if label.class_name is None or label.class_name not in self.targets:
            return None, UNKNOWN_CLASS
        target = self.targets[label.class_name]
        return (target, None) if target is not None else (None, NO_COUNTERPART)


def class_resolver(declared: Iterable[str], taxonomy: str | None) -> ClassResolver:
    """The resolver of ``taxonomy``, or of the taxonomy that declares most of the file's names."""
    name = taxonomy or detect_taxonomy(declared)
    if name == DATASET_TAXONOMY:
        return ClassResolver(name, {class_name: id_ for id_, class_name in load_taxonomy(name).names.items()})
    try:
        load_taxonomy(name)
    except FileNotFoundError as exc:
        raise LabelImportError(str(exc)) from exc
    if name not in mapped_taxonomies():
        raise LabelImportError(f"labels/mappings.yaml has no {name}->{DATASET_TAXONOMY} mapping, so {name} classes cannot "
                               f"become UMS classes (mapped: {', '.join([DATASET_TAXONOMY, *mapped_taxonomies()])})")
    mapping = load_mapping(name, DATASET_TAXONOMY)
    return ClassResolver(name, {class_name: mapping(id_) for id_, class_name in mapping.source.names.items()})


def detect_taxonomy(names: Iterable[str]) -> str:
    """UMS when its names cover the file's as well as any (they need no mapping), else the first taxonomy
    ``labels/mappings.yaml`` maps to UMS that declares most of them."""
    wanted = set(names)
    candidates = [DATASET_TAXONOMY, *mapped_taxonomies()]
    return max(candidates, key=lambda candidate: len(wanted & set(load_taxonomy(candidate).names.values())))


def mapped_taxonomies() -> list[str]:
    """The taxonomies ``labels/mappings.yaml`` maps to UMS, in the file's order."""
    mappings = yaml.safe_load((LABELS_DIR / "mappings.yaml").read_text(encoding="utf-8"))
    suffix = f"->{DATASET_TAXONOMY}"
    return [key[: -len(suffix)] for key in mappings if key.endswith(suffix)]


# -- captures --------------------------------------------------------------------------------------
@dataclass
class CaptureIndex:
    names: dict[str, str]  # capture id and exported image name -> capture id
    frames: dict[str, str]  # source frame file name -> capture id
    grids: dict[str, tuple[int, int]]  # capture id -> width, height of its aligned grid

    def match(self, candidates: Iterable[str]) -> str | None:
        """The capture an image names: by exported file name, by its stem, or by capture id."""
        for candidate in candidates:
            base = PurePosixPath(candidate.replace("\\", "/")).name
            for key in (candidate, base, PurePosixPath(base).stem):
                if key in self.names:
                    return self.names[key]
        return None

    def source_frame(self, candidates: Iterable[str]) -> str | None:
        """The capture whose source frame an image is named after (labelled off the aligned grid)."""
        for candidate in candidates:
            base = PurePosixPath(candidate.replace("\\", "/")).name
            if base in self.frames:
                return self.frames[base]
        return None


def capture_index(workspace: Workspace) -> CaptureIndex:
    captures = workspace.captures()
    names = {capture.capture_id: capture.capture_id for capture in captures}
    names.update({f"{capture.capture_id}.png": capture.capture_id for capture in captures})  # what export names them
    frames = {PurePosixPath(frame.path).name: capture.capture_id for capture in captures for frame in capture.frames.values()}
    # the aligned images are on crop's output grid: align warps the visible image onto crop's thermal image
    grids = {capture.capture_id: (int(crop["output_size"][0]), int(crop["output_size"][1]))
             for capture, crop in workspace.captures_with(CROP) if crop.get("output_size")}
    return CaptureIndex(names, frames, grids)


# -- from the file's labels to the workspace's -----------------------------------------------------
def plan_labels(images: list[RawImage], index: CaptureIndex, resolver: ClassResolver,
                report: ImportReport) -> dict[str, list[LabelRecord]]:
    """The labels to store per matched capture (an empty list too: an automatic import clears that capture)."""
    planned: dict[str, list[LabelRecord]] = {}
    unknown: Counter[str] = Counter()
    unmapped: Counter[str] = Counter()
    for image in images:
        report.images += 1
        report.labels_read += len(image.labels)
        capture_id = _capture_of(image, index, report)
        if capture_id is None:
            continue
        labels = planned.setdefault(capture_id, [])
        for label in image.labels:
            class_id, why = resolver.resolve(label)
            if class_id is None:
                (unknown if why == UNKNOWN_CLASS else unmapped)[_class_text(label)] += 1
                report.skip(why)
                continue
            record = _record(label, class_id, image.file, capture_id, index.grids[capture_id], report)
            if record is not None:
                labels.append(record)
    report.issues += _class_issues(report.path, resolver.taxonomy, unknown, unmapped)
    for capture_id, labels in planned.items():
        planned[capture_id] = _without_duplicates(labels, report)
        report.planned += len(planned[capture_id])
    return planned


def _capture_of(image: RawImage, index: CaptureIndex, report: ImportReport) -> str | None:
    """The capture of ``image`` when its labels can land on its grid; else None, with the issue why."""
    capture_id = index.match(image.names)
    count = len(image.labels)
    if capture_id is None:
        report.unknown_images += 1
        report.skip(UNKNOWN_IMAGE, count)
        report.issues.append(_image_issue(image, index))
        return None
    report.matched += 1
    grid = index.grids.get(capture_id)
    if grid is None:
        report.skip(NO_GRID, count)
        report.issues.append(Issue(stage=STAGE, file=image.file, capture_id=capture_id, level="warning", message=(
            f"image {image.name!r} is capture {capture_id}, which is not cropped yet, so the grid its labels live on "
            f"is unknown: its {count} labels skipped (run `ums crop` and `ums align`, then import again)")))
        return None
    if image.size is not None and image.size != grid:
        report.skip(OTHER_SIZE, count)
        report.issues.append(Issue(stage=STAGE, file=image.file, capture_id=capture_id, level="warning", message=(
            f"image {image.name!r} is {image.size[0]}x{image.size[1]}, but capture {capture_id}'s aligned grid is "
            f"{grid[0]}x{grid[1]}: its {count} labels would not land on the objects; skipped")))
        return None
    report.captures.add(capture_id)
    return capture_id


def _image_issue(image: RawImage, index: CaptureIndex) -> Issue:
    name = image.name
    frame_of = index.source_frame(image.names)
    if frame_of is not None:
        message = (f"image {name!r} is a source frame of capture {frame_of}, not its aligned image: labels live on the "
                   f"aligned grid; label the images `ums export` writes. Its {len(image.labels)} labels skipped")
    else:
        message = (f"image {name!r} matches no capture of the workspace (by exported file name, its stem or capture id): "
                   f"its {len(image.labels)} labels skipped")
    return Issue(stage=STAGE, file=image.file, level="warning", message=message)


def _class_text(label: RawLabel) -> str:
    return repr(label.class_name) if label.class_name is not None else f"index {label.class_ref} (the file names no class for it)"


def _class_issues(path: Path, taxonomy: str, unknown: Counter[str], unmapped: Counter[str]) -> list[Issue]:
    issues = [Issue(stage=STAGE, file=str(path), level="warning", message=(
        f"class {name} ({count} labels) is not a class of taxonomy {taxonomy}: skipped (pass --taxonomy, or add the "
        "class to labels/ and labels/mappings.yaml)")) for name, count in sorted(unknown.items())]
    issues += [Issue(stage=STAGE, file=str(path), level="info", message=(
        f"class {name} ({count} labels) has no UMS counterpart in labels/mappings.yaml {taxonomy}->ums: skipped"))
        for name, count in sorted(unmapped.items())]
    return issues


def _record(label: RawLabel, class_id: int, file: str, capture_id: str, grid: tuple[int, int],
            report: ImportReport) -> LabelRecord | None:
    """The workspace's label, on the grid; None (with an issue) for a box that is empty once clipped."""
    width, height = grid
    x0, y0, x1, y1 = label.box
    if label.normalised:
        x0, y0, x1, y1 = x0 * width, y0 * height, x1 * width, y1 * height
    clipped = (min(max(x0, 0.0), width), min(max(y0, 0.0), height), min(max(x1, 0.0), width), min(max(y1, 0.0), height))
    if clipped[2] - clipped[0] < MIN_SIDE_PX or clipped[3] - clipped[1] < MIN_SIDE_PX:
        report.skip(DEGENERATE)
        report.issues.append(Issue(stage=STAGE, file=file, capture_id=capture_id, level="warning", message=(
            f"{label.where}: box ({x0:.1f}, {y0:.1f}, {x1:.1f}, {y1:.1f}) has a side under {MIN_SIDE_PX:g} px once clipped "
            f"to the {width}x{height} grid: skipped")))
        return None
    if max(abs(a - b) for a, b in zip(clipped, (x0, y0, x1, y1))) > CLIP_TOLERANCE_PX:
        report.clipped += 1
    try:
        mask = _mask(label.segmentation, grid)
    except _Malformed as exc:
        report.malformed += 1
        report.issues.append(Issue(stage=STAGE, file=file, capture_id=capture_id, message=f"{label.where}: {exc}"))
        return None
    return LabelRecord(taxonomy=DATASET_TAXONOMY, class_id=class_id, box=clipped, score=label.score, mask=mask,
                       source=report.source, model=report.model, provenance=label.provenance)


def _mask(segmentation: Any, grid: tuple[int, int]) -> dict[str, Any] | None:
    """A COCO segmentation (compressed or plain RLE, or polygons) as the workspace's RLE on the grid."""
    if segmentation is None:
        return None
    from pycocotools import mask as mask_utils  # only files with masks need it

    from ums.masks import decode_rle, encode_rle

    width, height = grid
    if isinstance(segmentation, dict) and segmentation.get("size") != [height, width]:
        raise _Malformed(f"segmentation size {segmentation.get('size')!r} is not the {width}x{height} grid ([{height}, {width}])")
    try:
        if isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), str):
            decode_rle(segmentation)  # fails on counts that are not RLE
            return {"size": [height, width], "counts": segmentation["counts"]}
        rle = mask_utils.frPyObjects(segmentation, height, width)
        rle = mask_utils.merge(rle) if isinstance(rle, list) else rle
        return encode_rle(mask_utils.decode(rle).astype(bool))
    # pycocotools raises whatever its C code meets (TypeError, ValueError, IndexError, ...) on bad input
    except Exception as exc:
        raise _Malformed(f"segmentation is neither COCO RLE nor polygons ({type(exc).__name__}: {exc})") from exc


def same_label(a: LabelRecord, b: LabelRecord) -> bool:
    """The same class, every corner within ``SAME_BOX_PX``."""
    return a.class_id == b.class_id and max(abs(p - q) for p, q in zip(a.box, b.box)) <= SAME_BOX_PX


def _without_duplicates(labels: list[LabelRecord], report: ImportReport) -> list[LabelRecord]:
    """Each label once: a YOLO folder holds a capture's labels once per modality."""
    unique: list[LabelRecord] = []
    for label in labels:
        if any(same_label(label, seen) for seen in unique):
            report.skip(DUPLICATE)
        else:
            unique.append(label)
    return unique


# -- the workspace ---------------------------------------------------------------------------------
def store_labels(workspace: Workspace, planned: dict[str, list[LabelRecord]], report: ImportReport) -> None:
    """Every change in one transaction, under the writer lock: all of the file, or (on any failure) nothing."""
    store = _store_auto if report.source == "auto" else _store_human
    with workspace.writing(STAGE):
        try:
            with workspace.transaction() as db:
                for capture_id, labels in planned.items():
                    store(db, capture_id, labels, report)
                if report.dry_run:
                    raise _DryRun()
        except _DryRun:
            pass


def _store_auto(db: sqlite3.Connection, capture_id: str, labels: list[LabelRecord], report: ImportReport) -> None:
    """The same model's earlier unprotected labels go; a new box repeating a protected one is not added."""

    deleted = db.execute("DELETE FROM labels WHERE capture_id = ? AND source = 'auto' AND reviewed = 0 AND model IS ?",
                         (capture_id, report.model))
    report.replaced += deleted.rowcount
    protected = [label for label in _labels_of(db, capture_id) if label.protected]
    fresh = drop_repeats(labels, protected)
    report.skip(REPEAT, len(labels) - len(fresh))
    _insert(db, capture_id, fresh, report)


def _store_human(db: sqlite3.Connection, capture_id: str, labels: list[LabelRecord], report: ImportReport) -> None:
    """A label already there is not added again; an automatic one it repeats becomes human (so no automatic
    run can replace it), keeping its mask and scores."""
    existing = _labels_of(db, capture_id)
    fresh = []
    for label in labels:
        same = next((other for other in existing if same_label(label, other)), None)
        if same is None or (same.excluded and not same.protected):
            fresh.append(label)
        elif same.protected:
            report.skip(PRESENT)
        else:
            db.execute("UPDATE labels SET source = 'human', updated_at = ? WHERE id = ?", (utc_now(), same.id))
            same.source = "human"
            report.confirmed += 1
    _insert(db, capture_id, fresh, report)


def _labels_of(db: sqlite3.Connection, capture_id: str) -> list[LabelRecord]:
    return [LabelRecord.from_row(row) for row in db.execute("SELECT * FROM labels WHERE capture_id = ? ORDER BY id", (capture_id,))]


def _insert(db: sqlite3.Connection, capture_id: str, labels: list[LabelRecord], report: ImportReport) -> None:
    now = utc_now()
    db.executemany(
        INSERT_LABEL,
        [label.row_values(capture_id, now) for label in labels],
    )
    names = load_taxonomy(DATASET_TAXONOMY).names
    report.added += len(labels)
    report.per_class.update(names[label.class_id] for label in labels)
