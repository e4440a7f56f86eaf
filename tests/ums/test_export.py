from __future__ import annotations

from tests.conftest import PROJECT_ROOT, aligned_workspace

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from xml.etree import ElementTree

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from ums.detections import Detections
from ums.masks import encode_rle
from ums.export import export_workspace
from ums.core.records import LabelRecord
from ums.split import SPLITS, SplitConfig, split_workspace
from ums.taxonomy import load_taxonomy


@pytest.fixture(scope="module")
def labelled(synthetic_flight, tmp_path_factory):
    ws = aligned_workspace(synthetic_flight, tmp_path_factory.mktemp("ws"))
    first = ws.captures()[0].capture_id
    mask = np.zeros((512, 640), bool)
    mask[100:160, 100:220] = True
    ws.add_label(first, LabelRecord(class_id=2, box=(100, 100, 220, 160), score=0.9, mask=encode_rle(mask)))
    ws.add_label(first, LabelRecord(class_id=0, box=(400.5, 200, 430, 280), source="human"))
    ws.add_label(first, LabelRecord(class_id=5, box=(10, 10, 50, 40), tags=["reject"]))
    yield ws
    ws.close()


def splits_of(ws) -> dict[str, str | None]:
    return {c.capture_id: (ws.stage_result(c.capture_id, "split") or {}).get("split") for c in ws.captures()}


def test_coco_reads_back_with_pycocotools(labelled, tmp_path):
    report = export_workspace(labelled, tmp_path, "coco")
    assert (report.pairs, report.labels) == (4, 2)  # the rejected label stays out
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(tmp_path / "annotations.json"))
    assert len(coco.getImgIds()) == 4 and [c["name"] for c in coco.loadCats(coco.getCatIds())][:3] == ["person", "bicycle", "car"]
    annotations = coco.loadAnns(coco.getAnnIds())
    car = next(a for a in annotations if a["category_id"] == 3)
    assert car["bbox"] == [100, 100, 120, 60] and coco.annToMask(car).sum() == 60 * 120
    image = coco.loadImgs(car["image_id"])[0]
    assert cv2.imread(str(tmp_path / image["file_name"]), cv2.IMREAD_GRAYSCALE).shape == (512, 640)
    assert cv2.imread(str(tmp_path / image["visible_file_name"])).shape == (512, 640, 3)


def test_yolo_and_voc_and_semantic(labelled, tmp_path):
    export_workspace(labelled, tmp_path / "yolo", "yolo")
    first = labelled.captures()[0].capture_id
    split = splits_of(labelled)[first] or "train"  # not split yet: train
    boxes = Detections.from_yolo_txt(tmp_path / "yolo" / "labels" / "infrared" / split / f"{first}.txt", 640, 512, "ums")
    np.testing.assert_allclose(sorted(boxes.boxes.tolist()), [[100, 100, 220, 160], [400.5, 200, 430, 280]], atol=1e-3)
    assert (tmp_path / "yolo" / "images" / "visible" / split / f"{first}.png").exists()
    assert "names" in (tmp_path / "yolo" / "data.yaml").read_text()
    export_workspace(labelled, tmp_path / "voc", "voc")
    root = ElementTree.parse(tmp_path / "voc" / "Annotations" / f"{first}.xml").getroot()
    objects = {o.findtext("name"): [int(o.find("bndbox").findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax")]
               for o in root.iter("object")}
    assert objects == {"car": [101, 101, 220, 160], "person": [402, 201, 430, 280]}
    export_workspace(labelled, tmp_path / "sem", "semantic")
    semantic = cv2.imread(str(tmp_path / "sem" / "Segmentation_labels" / f"{first}.png"), cv2.IMREAD_UNCHANGED)
    assert semantic[130, 150] == 3 and semantic[0, 0] == 0 and (semantic == 3).sum() == 60 * 120
    with pytest.raises(ValueError, match="unknown export format"):
        export_workspace(labelled, tmp_path / "x", "pascal")


def test_msrs_layout_with_split_lists_metadata_and_card(labelled, tmp_path):
    split_workspace(labelled, SplitConfig(max_block_captures=1))
    report = export_workspace(labelled, tmp_path, "msrs", redact=True)
    assert report.pairs == 4 and report.splits == {"train": 3, "val": 1, "test": 0}  # 15% of 4 is under one block
    assert [issue.message for issue in report.issues] == ["test is empty: no exported capture is in it"]
    first = labelled.captures()[0].capture_id
    assert cv2.imread(str(tmp_path / "ir" / f"{first}.png"), cv2.IMREAD_GRAYSCALE).shape == (512, 640)
    assert cv2.imread(str(tmp_path / "vi" / f"{first}.png")).shape == (512, 640, 3)
    semantic = cv2.imread(str(tmp_path / "Segmentation_labels" / f"{first}.png"), cv2.IMREAD_UNCHANGED)
    assert semantic[130, 150] == 1 and semantic[0, 0] == 0  # UMS car -> MSRS car (1)
    assert (tmp_path / "classes.txt").read_text().splitlines()[:3] == ["person", "bicycle", "car"]
    lists = {name: (tmp_path / f"{name}.txt").read_text().split() for name in ("train", "val", "test")}
    assert sorted(sum(lists.values(), [])) == sorted(c.capture_id for c in labelled.captures())
    metadata = [json.loads(line) for line in (tmp_path / "metadata.jsonl").read_text().splitlines()]
    assert len(metadata) == 4 and all("GpsLatitude" not in m["xmp"] and m["exif"]["gps_latitude"] is None for m in metadata)
    card = (tmp_path / "README.md").read_text()
    assert "| car | 1 |" in card and "| person | 1 |" in card
    for plot in ("classes.png", "strata.png", "samples.jpg"):
        assert (tmp_path / "card" / plot).stat().st_size > 1000


@pytest.mark.parametrize("fmt", ["coco", "yolo", "voc", "semantic"])
def test_every_export_has_metadata_split_lists_and_a_card(labelled, tmp_path, fmt):
    export_workspace(labelled, tmp_path, fmt, redact=True)
    card = (tmp_path / "README.md").read_text()
    assert f"--format {fmt}" in card and (tmp_path / "card" / "samples.jpg").exists()
    assert len((tmp_path / "metadata.jsonl").read_text().splitlines()) == 4
    assert "GpsLatitude" not in (tmp_path / "metadata.jsonl").read_text()


@pytest.fixture()
def no_downloads(monkeypatch):
    """ultralytics' dataset check downloads datasets and fonts it cannot find: any attempt fails the test."""
    import socket

    import ultralytics.data.utils
    import ultralytics.utils.checks

    from ums.core.offline import configure_ultralytics

    configure_ultralytics()  # puts the font in place, as every ums entry point into ultralytics does

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args} {kwargs}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(ultralytics.data.utils, "safe_download", refuse)
    monkeypatch.setattr(ultralytics.data.utils, "download", refuse)
    monkeypatch.setattr(ultralytics.utils.checks, "safe_download", refuse, raising=False)


EVEN = SplitConfig(max_block_captures=1, fractions={"train": 0.5, "val": 0.25, "test": 0.25})  # 4 captures: 2, 1, 1


def test_yolo_yamls_follow_the_split_for_both_modalities(labelled, tmp_path, no_downloads):
    from ultralytics.data.utils import check_det_dataset, img2label_paths

    split_workspace(labelled, EVEN)
    assigned = splits_of(labelled)
    expected = {split: sorted(c for c, s in assigned.items() if s == split) for split in SPLITS}
    assert [len(expected[split]) for split in SPLITS] == [2, 1, 1]
    first = labelled.captures()[0].capture_id
    report = export_workspace(labelled, tmp_path, "yolo")
    assert report.issues == []
    for name, modality in (("data.yaml", "infrared"), ("data-visible.yaml", "visible")):
        data = check_det_dataset(str(tmp_path / name))  # a local file: ultralytics never looks up a dataset name
        assert data["nc"] == len(load_taxonomy("ums").names) and data["names"][2] == "car"
        found = {}
        for split in SPLITS:
            folder = Path(data[split])
            assert folder == (tmp_path / "images" / modality / split).resolve()
            images = sorted(folder.glob("*.png"))
            found[split] = [image.stem for image in images]
            labels = [Path(label) for label in img2label_paths([str(image) for image in images])]
            assert all(label.exists() for label in labels)
            if first in found[split]:
                assert len(labels[found[split].index(first)].read_text().splitlines()) == 2
        assert found == expected  # train, val and test are disjoint and exactly what `ums split` chose
    assert (tmp_path / "train.txt").read_text().split() == expected["train"]
    # split again and export into the same folder: a capture that changed split must not stay in the old one
    split_workspace(labelled, EVEN.model_copy(update={"max_block_captures": 2}))  # two blocks of two
    moved = {split: sorted(c for c, s in splits_of(labelled).items() if s == split) for split in SPLITS}
    assert moved != expected
    export_workspace(labelled, tmp_path, "yolo")
    for name, modality in (("data.yaml", "infrared"), ("data-visible.yaml", "visible")):
        data = check_det_dataset(str(tmp_path / name))
        assert {split: sorted(p.stem for p in Path(data[split]).glob("*.png")) for split in SPLITS} == moved
        labels = {split: sorted(p.stem for p in (tmp_path / "labels" / modality / split).glob("*.txt")) for split in SPLITS}
        assert labels == moved


def test_yolo_and_coco_without_a_split_go_to_train_with_a_warning(synthetic_flight, tmp_path):
    ws = aligned_workspace(synthetic_flight, tmp_path / "ws")
    for fmt in ("yolo", "coco"):
        report = export_workspace(ws, tmp_path / fmt, fmt)
        messages = [issue.message for issue in report.issues]
        assert messages[0] == "4 of 4 captures are not split yet: exported as train; run `ums split` first"
        assert messages[1:] == ["val is empty: no exported capture is in it", "test is empty: no exported capture is in it"]
        assert [issue.message for issue in ws.issues("export")] == messages
    assert len(list((tmp_path / "yolo" / "images" / "infrared" / "train").glob("*.png"))) == 4
    assert not list((tmp_path / "yolo" / "images" / "infrared" / "val").iterdir())
    train = json.loads((tmp_path / "coco" / "annotations" / "instances_train.json").read_text())
    assert len(train["images"]) == 4
    assert len((tmp_path / "coco" / "unsplit.txt").read_text().split()) == 4
    assert "`unsplit.txt` (not split yet: in the train files above" in (tmp_path / "coco" / "README.md").read_text()
    ws.close()


def test_coco_one_file_per_split_read_by_fiftyone_and_pycocotools(labelled, tmp_path):
    from ums.review import connect_fiftyone

    split_workspace(labelled, EVEN)
    assigned = splits_of(labelled)
    export_workspace(labelled, tmp_path, "coco")
    assert sorted(p.name for p in (tmp_path / "annotations").iterdir()) == [f"instances_{s}.json" for s in ("test", "train", "val")]
    fo = connect_fiftyone(labelled)
    seen_ids, labels = set(), 0
    for split in SPLITS:
        path = tmp_path / "annotations" / f"instances_{split}.json"
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(path))
        images = coco.loadImgs(coco.getImgIds())
        assert sorted(image["capture_id"] for image in images) == sorted(c for c, s in assigned.items() if s == split)
        ids = [image["id"] for image in json.loads(path.read_text())["images"]]
        assert len(ids) == len(set(ids)) and not seen_ids & set(ids)  # one id per capture across the split files
        seen_ids |= set(ids)
        for annotation in coco.loadAnns(coco.getAnnIds()):
            assert annotation["image_id"] in coco.imgs
            image = coco.imgs[annotation["image_id"]]
            x, y, w, h = annotation["bbox"]
            assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= image["width"] and y + h <= image["height"]
        labels += len(coco.getAnnIds())
        dataset = fo.Dataset.from_dir(dataset_type=fo.types.COCODetectionDataset, data_path=str(tmp_path),
                                      labels_path=str(path), label_types="detections", label_field="ground_truth")
        try:
            assert len(dataset) == len(images)
            assert dataset.count("ground_truth.detections") == len(coco.getAnnIds())
            assert sorted(Path(f).stem for f in dataset.values("filepath")) == sorted(i["capture_id"] for i in images)
        finally:
            dataset.delete()
    assert len(seen_ids) == 4 and labels == 2


def _stopped(pid: int) -> bool:
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state in ("T", "t", "Z")


def _kill_while_a_temporary_exists(command: list[str], out: Path) -> list[Path]:
    """Run ``command`` and SIGKILL it while it has a temporary open in ``out``; the temporaries left.

    A temporary lives for milliseconds, so the process is frozen (SIGSTOP) before each look: what is
    seen then is still there when SIGKILL lands."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while process.poll() is None and time.monotonic() < deadline:
            os.kill(process.pid, signal.SIGSTOP)
            while not _stopped(process.pid):
                time.sleep(0.0002)
            left = list(out.rglob(".*.tmp")) if out.exists() else []
            if left:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
                return left
            os.kill(process.pid, signal.SIGCONT)
            time.sleep(0.002)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return []


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_sigkill_mid_export_then_rerun_equals_a_clean_export(labelled, tmp_path):
    split_workspace(labelled, EVEN)
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "ums", "export", str(out), "--format", "yolo", "--workspace", str(labelled.root)]
    for _ in range(5):  # each try catches the export with a file half written, unless it finishes first
        left = _kill_while_a_temporary_exists(command, out)
        if left:
            break
    assert left, "the export was never caught with a temporary open"
    report = export_workspace(labelled, out, "yolo")
    assert not list(out.rglob("*.tmp")) and report.removed_temporaries == len(left)
    export_workspace(labelled, tmp_path / "clean", "yolo")
    killed, clean = _tree(out), _tree(tmp_path / "clean")
    assert sorted(killed) == sorted(clean) and len(clean) > 20
    assert killed == clean


# -- where an export may write ----------------------------------------------------------------------


def test_a_foreign_non_empty_folder_is_refused_until_overwrite(labelled, tmp_path):
    from ums.export import ExportError

    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"mine")
    (out / "album").mkdir()
    (out / "album" / "a.jpg").write_bytes(b"also mine")
    with pytest.raises(ExportError) as error:
        export_workspace(labelled, out, "coco")
    assert str(error.value) == (f"{out} is not empty and is no ums export (choose a new or empty folder, or add --overwrite "
                                "to delete what it holds first)")
    assert sorted(p.name for p in out.rglob("*")) == ["a.jpg", "album", "holiday.jpg"]  # untouched
    report = export_workspace(labelled, out, "coco", overwrite=True)
    assert report.cleared == 2 and report.pairs == 4
    assert not (out / "holiday.jpg").exists() and not (out / "album").exists()
    assert json.loads((out / ".ums-export.json").read_text()) == {"format": "coco", "workspace": str(labelled.root.resolve())}


def test_another_layout_or_workspace_in_the_folder_is_refused(labelled, tmp_path):
    from ums.export import ExportError

    export_workspace(labelled, tmp_path / "out", "coco")
    export_workspace(labelled, tmp_path / "out", "coco")  # the same export again: fine
    with pytest.raises(ExportError, match="holds a coco export of this workspace, which a yolo export would mix with"):
        export_workspace(labelled, tmp_path / "out", "yolo")
    assert not (tmp_path / "out" / "data.yaml").exists()
    (tmp_path / "out" / ".ums-export.json").write_text(json.dumps({"workspace": "/elsewhere/ws", "format": "coco"}))
    with pytest.raises(ExportError, match=r"holds an export of another workspace \(/elsewhere/ws\)"):
        export_workspace(labelled, tmp_path / "out", "coco")


def test_an_export_from_before_marks_is_recognised_by_its_card(labelled, tmp_path):
    from ums.export import ExportError

    export_workspace(labelled, tmp_path / "old", "voc")
    (tmp_path / "old" / ".ums-export.json").unlink()
    with pytest.raises(ExportError, match="is no ums export"):
        export_workspace(labelled, tmp_path / "old", "semantic")  # its card says voc
    assert export_workspace(labelled, tmp_path / "old", "voc").pairs == 4
    assert (tmp_path / "old" / ".ums-export.json").exists()


def test_a_folder_holding_only_a_killed_exports_temporary_counts_as_empty(labelled, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / ".ums-export.json.999999.tmp").write_text("{")
    assert export_workspace(labelled, tmp_path / "out", "voc").removed_temporaries == 1


def test_files_the_workspace_and_its_neighbourhood_are_refused(labelled, tmp_path):
    from ums.export import ExportError

    root = labelled.root.resolve()
    (tmp_path / "a-file").write_text("x")
    cases = [
        (tmp_path / "a-file", f"{tmp_path / 'a-file'} is a file, not a folder (name a new or empty folder for the export)"),
        (root, f"{root} is inside the workspace {root} (export to a folder outside it, e.g. {root.parent / (root.name + '-export')})"),
        (root / "export", f"{root / 'export'} is inside the workspace {root}"),
        (root.parent, f"{root.parent} holds the workspace {root} (export to a folder of its own"),
    ]
    before = sorted(p.name for p in root.iterdir())
    for out, message in cases:
        for overwrite in (False, True):
            with pytest.raises(ExportError) as error:
                export_workspace(labelled, out, "coco", overwrite=overwrite)
            assert str(error.value).startswith(message)
    assert sorted(p.name for p in root.iterdir()) == before and (tmp_path / "a-file").read_text() == "x"


def test_nothing_to_export_writes_nothing(tmp_path):
    from ums.export import NothingToExport
    from ums.core.workspace import Workspace

    with Workspace.open(tmp_path / "ws") as ws:
        with pytest.raises(NothingToExport) as error:
            export_workspace(ws, tmp_path / "out", "msrs")
    assert str(error.value) == (f"nothing to export: no capture in {(tmp_path / 'ws').resolve()} is aligned yet (run `ums crop`, "
                                "then `ums align`, on this workspace first)")
    assert not (tmp_path / "out").exists()


def test_write_pairs_writes_a_chosen_subset_with_chosen_labels_and_splits(labelled, tmp_path):
    """What `ums train-detector` hands the YOLO writer: some pairs, some of their labels, its own splits."""
    from ums.export import workspace_pairs, write_pairs
    from ums.exporters import yolo_data

    everything = workspace_pairs(labelled)
    assert len(everything) == 4 and len(everything[0].labels) == 2  # the rejected label is out
    first, second = everything[0], everything[1]
    first.labels = [label for label in first.labels if label.source == "human"]
    first.split, second.split = "train", "val"
    pairs = write_pairs(labelled, tmp_path, "yolo", [first, second])
    assert [pair.layout_split for pair in pairs] == ["train", "val"] and pairs[0].size == (640, 512)
    for modality in ("infrared", "visible"):
        train = tmp_path / "labels" / modality / "train" / f"{first.capture.capture_id}.txt"
        assert train.read_text().startswith("0 ") and len(train.read_text().splitlines()) == 1
        assert (tmp_path / "labels" / modality / "val" / f"{second.capture.capture_id}.txt").read_text() == ""
    assert len(list(tmp_path.glob("images/*/*/*.png"))) == 4
    assert not (tmp_path / "README.md").exists()  # no card: the caller's choice
    both = yolo_data(["infrared", "visible"], "dataset/")
    assert both["val"] == ["dataset/images/infrared/val", "dataset/images/visible/val"] and both["names"][5] == "truck"
    assert yolo_data(["visible"])["test"] == "images/visible/test"
