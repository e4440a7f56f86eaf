"""The ``msrs`` export layout (what ``tsjnet train --data`` reads) and its dataset card."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from ums.core.atomic import write_bytes, write_image, write_text
from ums.previews import preview
from ums.manifest import manifest_records
from ums.split import SPLITS, strata_of
from ums.taxonomy import load_taxonomy
from ums.core.workspace import Workspace

SAMPLE_GRID = 6
LAYOUTS = {
    "msrs": "Layout: `ir/` and `vi/` (PNG, same size, pixel-aligned), `Segmentation_labels/` (MSRS class ids: "
            "0 background, 1 car, 2 person, 3 bike, ...), `labels/` (YOLO boxes, ids of `classes.txt`).",
    "coco": "Layout: `infrared/`, `visible/` (pixel-aligned PNG pairs), `annotations/instances_{train,val,test}.json` "
            "(COCO, RLE masks; `file_name` is the infrared image, `visible_file_name` its partner; image ids unique "
            "across the files) and `annotations.json` (every split, each image's `split` named).",
    "yolo": "Layout: `images/{infrared,visible}/{train,val,test}/`, `labels/{infrared,visible}/{train,val,test}/` "
            "(YOLO boxes); `data.yaml` (infrared) and `data-visible.yaml` name the split folders.",
    "voc": "Layout: `infrared/`, `visible/`, `Annotations/` (Pascal VOC XML, 1-based pixel boxes).",
    "semantic": "Layout: `infrared/`, `visible/`, `Segmentation_labels/` (0 background, UMS class id + 1).",
}

UNSPLIT_NOTE = {True: ", `unsplit.txt` (not split yet: in the train files above until `ums split` runs)",
                False: ", `unsplit.txt` (not split yet: in no split list until `ums split` runs)"}


def write_metadata_and_card(workspace: Workspace, pairs, out: Path, redact: bool, fmt: str) -> None:
    """Split lists (from ``ums split``: ``pair.split``), ``metadata.jsonl`` and the dataset card."""
    splits: dict[str, list[str]] = {name: [] for name in SPLITS}
    unsplit = []
    for pair in pairs:
        (splits[pair.split] if pair.split in splits else unsplit).append(pair.capture.capture_id)
    for name, ids in splits.items():
        write_text(out / f"{name}.txt", "".join(f"{i}\n" for i in ids))
    if unsplit:  # no `ums split` yet: everything is listed, nothing silently dropped
        write_text(out / "unsplit.txt", "".join(f"{i}\n" for i in unsplit))
    exported = {pair.capture.capture_id for pair in pairs}
    lines = [json.dumps(record) for record in manifest_records(workspace, redact) if record["capture_id"] in exported]
    write_text(out / "metadata.jsonl", "\n".join(lines) + ("\n" if lines else ""))
    write_card(workspace, pairs, out, splits, unsplit, fmt)


def write_card(workspace: Workspace, pairs, out: Path, splits: dict[str, list[str]], unsplit: list[str],
               fmt: str = "msrs") -> Path:
    names = load_taxonomy("ums").names
    classes = Counter(names[label.class_id] for pair in pairs for label in pair.labels)
    strata = Counter()
    for pair in pairs:
        strata.update(k for k in strata_of(workspace, pair.capture) if not k.startswith("class:"))
    _bar_plot({**classes}, "labels per class", out / "card" / "classes.png")
    _bar_plot({k: v for k, v in strata.items()}, "pairs per time of day and altitude band", out / "card" / "strata.png")
    _sample_grid(pairs, out, out / "card" / "samples.jpg")
    sources = Counter(label.source + (" (reviewed)" if label.reviewed else "") for p in pairs for label in p.labels)
    rows = "\n".join(f"| {name} | {len(ids)} |" for name, ids in splits.items())
    text = f"""# UMS dataset export

Aligned infrared/visible pairs on the thermal grid, exported by `ums export --format {fmt}`.

| split | pairs |
| --- | ---: |
{rows}
| not split yet | {len(unsplit)} |

Labels: {sum(classes.values())} ({', '.join(f'{k}: {v}' for k, v in sorted(sources.items())) or 'none'}).

| class | labels |
| --- | ---: |
{chr(10).join(f'| {k} | {v} |' for k, v in sorted(classes.items()))}

![labels per class](card/classes.png)
![time of day and altitude](card/strata.png)
![sample pairs](card/samples.jpg)

{LAYOUTS[fmt]}
Split lists: `train.txt` / `val.txt` / `test.txt` (capture ids){UNSPLIT_NOTE[fmt in ("coco", "yolo")] if unsplit else ""};
`metadata.jsonl`: one manifest line per pair.
"""
    return write_text(out / "README.md", text)


def _bar_plot(values: dict[str, int], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3))
    keys = sorted(values)
    axis.bar(range(len(keys)), [values[k] for k in keys], color="#4477aa")
    axis.set_xticks(range(len(keys)), keys, rotation=30, ha="right", fontsize=8)
    axis.set_title(title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    write_bytes(path, buffer.getvalue())


def _sample_grid(pairs, out: Path, path: Path) -> None:
    tiles = []
    for pair in pairs[:SAMPLE_GRID]:
        visible = cv2.imread(str(out / pair.visible))
        thermal = cv2.imread(str(out / pair.infrared), cv2.IMREAD_GRAYSCALE)
        semantic = np.zeros(thermal.shape, np.uint8)
        tile = preview(visible, thermal, pair.labels, semantic)
        tiles.append(cv2.resize(tile, (640, 256), interpolation=cv2.INTER_AREA))
    if tiles:
        write_image(path, np.vstack(tiles))
