"""Where a dataset keeps its files, for the layouts ``tsjnet train --data`` reads.

- ``ums export --format msrs``: ``ir/``, ``vi/``, ``Segmentation_labels/``, ``labels/<id>.txt`` (YOLO,
  names in ``classes.txt``), ``train.txt`` / ``val.txt`` / ``test.txt``.
- public MSRS: ``<split>/ir``, ``<split>/vi``, ``<split>/Segmentation_labels`` (or the same folders at
  the root), boxes as Pascal-VOC ``Annotation(s)/<id>.xml`` or YOLO ``labels_det_yolo/<view>/<id>.txt``
  (``classes.txt`` beside), split lists ``<split>.txt`` or ``Main/<split>.txt``.
Images without boxes or without a segmentation map are fine: the missing terms are skipped for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tsjnet.images import list_images


@dataclass(frozen=True)
class SampleFiles:
    name: str
    infrared: Path
    visible: Path
    segmentation: Path | None = None
    boxes: Path | None = None  # YOLO .txt or VOC .xml


@dataclass
class DatasetIndex:
    root: Path
    samples: list[SampleFiles]
    class_names: list[str]  # box class names in file id order (YOLO); VOC uses names directly
    problems: list[str] = field(default_factory=list)


def _first_dir(*candidates: Path) -> Path | None:
    return next((c for c in candidates if c.is_dir()), None)


def _image_root(root: Path, split: str) -> Path:
    for base in (root / split, root):
        if (base / "ir").is_dir() and (base / "vi").is_dir():
            return base
    raise FileNotFoundError(f"{root}: no ir/ and vi/ folders (looked in {root / split} and {root}); "
                            "expected a `ums export --format msrs` folder or the public MSRS layout")


def _split_names(root: Path, split: str) -> list[str] | None:
    for candidate in (root / f"{split}.txt", root / "Main" / f"{split}.txt", root / "ImageSets" / "Main" / f"{split}.txt"):
        if candidate.is_file():
            return [line.strip() for line in candidate.read_text().splitlines() if line.strip()]
    return None


def _box_files(root: Path, view: str) -> tuple[dict[str, Path], Path | None]:
    folder = _first_dir(root / "labels", root / "labels_det_yolo" / view, root / "Annotation", root / "Annotations")
    if folder is None:
        return {}, None
    files = {p.stem: p for p in folder.iterdir() if p.suffix in (".txt", ".xml") and p.name != "classes.txt"}
    classes = next((c for c in (root / "classes.txt", folder / "classes.txt", folder.parent / "classes.txt")
                    if c.is_file()), None)
    return files, classes


def read_class_names(path: Path | None) -> list[str]:
    """``classes.txt``: one name per line, optionally prefixed by its id (``0 person``)."""
    if path is None:
        return []
    names = []
    for line in path.read_text().splitlines():
        parts = line.strip().split(maxsplit=1)
        if not parts:
            continue
        names.append(parts[1] if len(parts) == 2 and parts[0].isdigit() else line.strip())
    return names


def discover(root: str | Path, split: str = "train", box_view: str = "fusion") -> DatasetIndex:
    """The samples of ``split`` (every pair when the dataset has no split lists, or for ``"all"``)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    image_root = _image_root(root, split)
    infrared, visible = list_images(image_root / "ir"), list_images(image_root / "vi")
    segmentation_dir = _first_dir(image_root / "Segmentation_labels", root / "Segmentation_labels")
    segmentation = list_images(segmentation_dir) if segmentation_dir else {}
    boxes, classes_file = _box_files(root, box_view)
    wanted = None if split == "all" else _split_names(root, split)
    names = wanted if wanted is not None else sorted(infrared)
    index = DatasetIndex(root, [], read_class_names(classes_file))
    for name in names:
        if name not in infrared or name not in visible:
            where = image_root / ("ir" if name not in infrared else "vi")
            index.problems.append(f"{root}: {split} lists {name} but {where} has no {name}.*")
            continue
        index.samples.append(SampleFiles(name, infrared[name], visible[name], segmentation.get(name), boxes.get(name)))
    if not index.samples:
        raise FileNotFoundError(f"{root}: no {split} pairs found")
    return index
