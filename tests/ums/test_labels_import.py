from __future__ import annotations

from tests.conftest import aligned_workspace

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ums.export import export_workspace
from ums.labels_import import LabelImportError, import_labels
from ums.masks import decode_rle, encode_rle
from ums.core.records import LabelRecord
from ums.core.workspace import Workspace

CAR_MASK = np.zeros((512, 640), bool)
CAR_MASK[100:160, 100:220] = True
# (capture index, label): on the 640x512 grid; one box touches the image corner, one has odd fractions
SOURCE_LABELS = [
    (0, LabelRecord(class_id=2, box=(100, 100, 220, 160), score=0.9, mask=encode_rle(CAR_MASK), model="det@1",
                    provenance={"visible": 0.9, "thermal": 0.4})),
    (0, LabelRecord(class_id=0, box=(400.5, 200, 430, 280), source="human")),
    (1, LabelRecord(class_id=1, box=(5.25, 7.5, 80.125, 60.75), source="human")),
    (1, LabelRecord(class_id=5, box=(600, 480, 640, 512), score=0.55, model="det@1")),
]


@pytest.fixture(scope="module")
def aligned(synthetic_flight, tmp_path_factory) -> Path:
    """An aligned workspace without labels, closed: each test labels a copy of its own."""
    root = tmp_path_factory.mktemp("aligned") / "ws"
    aligned_workspace(synthetic_flight, root).close()
    return root


@pytest.fixture()
def fresh(aligned, tmp_path):
    with Workspace.open(shutil.copytree(aligned, tmp_path / "fresh")) as ws:
        yield ws


@pytest.fixture(scope="module")
def exported(aligned, tmp_path_factory) -> dict[str, Path]:
    """The source labels exported as COCO and YOLO from a workspace of the same flight."""
    folder = tmp_path_factory.mktemp("exports")
    with Workspace.open(shutil.copytree(aligned, folder / "labelled")) as ws:
        ids = [capture.capture_id for capture in ws.captures()]
        for index, label in SOURCE_LABELS:
            ws.add_label(ids[index], label)
        for fmt in ("coco", "yolo"):
            export_workspace(ws, folder / fmt, fmt)
    return {"coco": folder / "coco", "yolo": folder / "yolo"}


def ids_of(ws) -> list[str]:
    return [capture.capture_id for capture in ws.captures()]


def boxes_by_capture(ws) -> dict[str, list[tuple[int, tuple[float, ...]]]]:
    return {cid: sorted((label.class_id, label.box) for label in ws.labels(cid)) for cid in ids_of(ws) if ws.labels(cid)}


def expected_boxes(ws) -> dict[str, list[tuple[int, tuple[float, ...]]]]:
    ids = ids_of(ws)
    expected: dict[str, list] = {}
    for index, label in SOURCE_LABELS:
        expected.setdefault(ids[index], []).append((label.class_id, label.box))
    return {cid: sorted(labels) for cid, labels in expected.items()}


def assert_same_boxes(ws, atol: float) -> None:
    got, want = boxes_by_capture(ws), expected_boxes(ws)
    assert sorted(got) == sorted(want)
    for cid in want:
        assert [c for c, _ in got[cid]] == [c for c, _ in want[cid]]
        np.testing.assert_allclose([b for _, b in got[cid]], [b for _, b in want[cid]], atol=atol, rtol=0)


def snapshot(ws) -> list[dict]:
    return [label.model_dump() for label in ws.labels()]


def write_json(path: Path, document) -> Path:
    path.write_text(json.dumps(document))
    return path


def coco_document(images: list[dict], annotations: list[dict], names=("person", "bicycle", "car")) -> dict:
    categories = [{"id": index + 1, "name": name} for index, name in enumerate(names)]
    for index, annotation in enumerate(annotations, start=1):
        annotation.setdefault("id", index)
        annotation.setdefault("image_id", 1)
    return {"images": images, "annotations": annotations, "categories": categories}


# -- round trips -----------------------------------------------------------------------------------
def test_coco_export_imports_back_as_the_same_labels(exported, fresh):
    report = import_labels(fresh, exported["coco"], "coco", "human")  # the export folder: its annotations.json
    assert not report.refused and report.issues == []
    assert (report.taxonomy, report.images, report.matched, report.unknown_images, len(report.captures)) == ("ums", 4, 4, 0, 4)
    assert (report.labels_read, report.added, report.clipped, sum(report.skipped.values())) == (4, 4, 0, 0)
    assert dict(report.per_class) == {"car": 1, "person": 1, "bicycle": 1, "truck": 1}
    assert_same_boxes(fresh, atol=1e-9)  # COCO carries the floats as they were
    labels = fresh.labels()
    assert {label.source for label in labels} == {"human"} and all(label.protected for label in labels)
    car = next(label for label in labels if label.class_id == 2)
    assert car.score == 0.9 and (decode_rle(car.mask) == CAR_MASK).all()
    rows = dict(report.rows())
    assert rows["labels added"] == 4 and rows["images unknown"] == 0 and rows["  car"] == 1 and rows["classes"] == "ums -> ums"


def test_yolo_export_imports_back_as_the_same_labels(exported, fresh):
    report = import_labels(fresh, exported["yolo"] / "data.yaml", "yolo", "human")
    assert report.issues == [] and (report.images, report.matched, report.added) == (4, 4, 4)
    assert_same_boxes(fresh, atol=1e-3)  # six decimals of a 640 px width: 0.0003 px
    assert {label.source for label in fresh.labels()} == {"human"}


def test_a_yolo_labels_folder_holds_each_capture_twice_and_imports_it_once(exported, fresh):
    report = import_labels(fresh, exported["yolo"] / "labels", "yolo", "auto", model="reviewed-elsewhere", taxonomy="ums")
    assert (report.images, report.matched, len(report.captures), report.labels_read) == (8, 8, 4, 8)
    assert report.added == 4 and dict(report.skipped) == {"duplicate in the file": 4}
    assert_same_boxes(fresh, atol=1e-3)
    assert {(label.source, label.model) for label in fresh.labels()} == {("auto", "reviewed-elsewhere")}


def test_yolo_folder_without_class_names_needs_a_taxonomy(exported, fresh):
    with pytest.raises(LabelImportError, match=r"names no classes \(no data.yaml or classes.txt\): pass the taxonomy"):
        import_labels(fresh, exported["yolo"] / "labels", "yolo", "human")
    assert fresh.labels() == []


# -- scores ----------------------------------------------------------------------------------------
def test_coco_scores_per_modality_become_score_and_provenance(fresh, tmp_path):
    first, second = ids_of(fresh)[:2]
    images = [{"id": 1, "file_name": f"infrared/{first}.png", "width": 640, "height": 512},
              {"id": 2, "file_name": f"photos/{second}.jpg"}]  # another tool's name: the stem matches
    annotations = [
        {"category_id": 3, "bbox": [10, 20, 30, 40], "score": 0.8, "scores": {"visible": 0.8, "infrared": 0.6}},
        {"category_id": 1, "bbox": [50, 60, 10, 20], "score": 0.3, "scores": {"thermal": 0.3}, "image_id": 2},
        {"category_id": 18, "bbox": [70, 80, 10, 10], "score": 0.9},  # a dog: COCO has it, UMS does not
    ]
    names = ["person", "bicycle", "car", *[f"other{i}" for i in range(14)], "dog"]  # category 18: the dog
    document = coco_document(images, annotations, names=names)
    report = import_labels(fresh, write_json(tmp_path / "detections.json", document), "coco", "auto", model="yolo-x")
    assert report.taxonomy == "coco" and report.added == 2  # COCO declares person, bicycle, car and dog; UMS only three
    assert dict(report.skipped) == {"class without a UMS counterpart": 1}
    car = fresh.labels(first)[0]
    assert (car.class_id, car.box, car.score, car.provenance) == (2, (10, 20, 40, 60), 0.8, {"visible": 0.8, "thermal": 0.6})
    assert (car.source, car.model, car.protected) == ("auto", "yolo-x", False)
    person = fresh.labels(second)[0]
    assert (person.class_id, person.box, person.score, person.provenance) == (0, (50, 60, 60, 80), 0.3, {"thermal": 0.3})


def test_coco_names_of_the_coco_taxonomy_map_through_mappings_yaml(fresh, tmp_path):
    first = ids_of(fresh)[0]
    coco_names = ["person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat"]
    annotations = [{"category_id": 8, "bbox": [10, 10, 20, 20]},  # truck: UMS 5
                   {"category_id": 6, "bbox": [40, 10, 20, 20]},  # bus: UMS 4
                   {"category_id": 9, "bbox": [70, 10, 20, 20]}]  # boat: no counterpart
    document = coco_document([{"id": 1, "file_name": f"{first}.png"}], annotations, names=coco_names)
    report = import_labels(fresh, write_json(tmp_path / "a.json", document), "coco", "human")
    assert report.taxonomy == "coco" and report.added == 2
    assert sorted(label.class_id for label in fresh.labels()) == [4, 5]
    assert dict(report.skipped) == {"class without a UMS counterpart": 1}
    assert [issue.message for issue in report.issues] == [
        "class 'boat' (1 labels) has no UMS counterpart in labels/mappings.yaml coco->ums: skipped"]


def test_a_sixth_yolo_column_is_the_score(fresh, tmp_path):
    first = ids_of(fresh)[0]
    label_file = tmp_path / f"{first}.txt"
    label_file.write_text("2 0.5 0.5 0.25 0.25 0.75\n0 0.1 0.1 0.05 0.1\n")
    report = import_labels(fresh, label_file, "yolo", "auto", taxonomy="ums")
    assert report.added == 2 and report.model == "imported"
    car, person = sorted(fresh.labels(first), key=lambda label: -label.class_id)
    assert (car.class_id, car.box, car.score, car.model) == (2, (240, 192, 400, 320), 0.75, "imported")
    np.testing.assert_allclose(person.box, (48, 25.6, 80, 76.8))
    assert person.score is None


# -- malformed and unknown input ------------------------------------------------------------------
MALFORMED_COCO = [
    ("{", ["not valid JSON (Expecting property name enclosed in double quotes at line 1, column 2)"]),
    ({"images": []}, ["no 'annotations' list: not a COCO dataset file", "no 'categories' list: not a COCO dataset file"]),
    ([{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}],
     ["a list, not a COCO dataset: a detection results list names no image files or classes to match; import the dataset file "
      "with 'images' and 'categories'"]),
    ("missing bbox", ["annotation 2: no 'bbox'"]),
    ("NaN", ["annotation 2: bbox value nan is not a finite number"]),
    ("score 1.5", ["annotation 2: score 1.5 is outside 0..1"]),
    ("image id 7", ["annotation 2: image id 7 is not one of 'images'"]),
]


def _malformed_coco(case, first: str) -> str:
    """The file's text: the case itself, or a valid file whose second annotation the case breaks."""
    if not isinstance(case, str) or case == "{":
        return case if isinstance(case, str) else json.dumps(case)
    broken = {"category_id": 1, "bbox": [10, 10, 20, 20]}
    if case == "missing bbox":
        del broken["bbox"]
    elif case == "NaN":
        broken["bbox"] = [float("nan"), 10, 20, 20]
    elif case == "score 1.5":
        broken["score"] = 1.5
    elif case == "image id 7":
        broken["image_id"] = 7
    document = coco_document([{"id": 1, "file_name": f"{first}.png"}], [{"category_id": 3, "bbox": [1, 1, 50, 50]}, broken])
    return json.dumps(document)  # Python writes the NaN literal that json.loads reads back


@pytest.mark.parametrize("case, messages", MALFORMED_COCO)
def test_a_malformed_coco_file_is_refused_whole_and_changes_nothing(fresh, tmp_path, case, messages):
    first = ids_of(fresh)[0]
    fresh.add_label(first, LabelRecord(class_id=0, box=(1, 2, 3, 4), source="human"))
    before = snapshot(fresh)
    path = tmp_path / "bad.json"
    path.write_text(_malformed_coco(case, first))
    report = import_labels(fresh, path, "coco", "auto")
    assert report.refused and report.added == 0
    assert [(issue.file, issue.message, issue.level) for issue in report.issues] == [(str(path), m, "error") for m in messages]
    assert dict(report.rows())["written"].startswith(f"nothing: {len(messages)} malformed entries")
    assert snapshot(fresh) == before


@pytest.mark.parametrize("line, message", [
    ("2 0.5 0.5", "line 2: 3 columns, expected 5 (class cx cy w h) or 6 (class cx cy w h score)"),
    ("2 nan 0.5 0.1 0.1", "line 2: coordinate value nan is not a finite number"),
    ("car 0.5 0.5 0.1 0.1", "line 2: class 'car' is not a class index (0, 1, ...)"),
    ("2 0.5 0.5 0.1 0.1 2", "line 2: score 2.0 is outside 0..1"),
])
def test_a_malformed_yolo_line_refuses_every_file_and_changes_nothing(fresh, tmp_path, line, message):
    first, second = ids_of(fresh)[:2]
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / f"{first}.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    bad = tmp_path / "labels" / f"{second}.txt"
    bad.write_text(f"1 0.2 0.2 0.1 0.1\n{line}\n")
    (tmp_path / "classes.txt").write_text("person\nbicycle\ncar\n")
    report = import_labels(fresh, tmp_path, "yolo", "human")
    assert report.refused and [(issue.file, issue.message) for issue in report.issues] == [(str(bad), message)]
    assert fresh.labels() == []


def test_unknown_images_and_classes_are_issues_and_the_rest_comes_in(fresh, tmp_path):
    first = ids_of(fresh)[0]
    frame = Path(fresh.captures()[1].frames["T"].path).name
    images = [{"id": 1, "file_name": f"infrared/{first}.png"}, {"id": 2, "file_name": "holiday/beach.png"},
              {"id": 3, "file_name": frame}]
    annotations = [{"category_id": 1, "bbox": [10, 10, 20, 20]}, {"category_id": 2, "bbox": [40, 10, 20, 20]},
                   {"category_id": 1, "bbox": [10, 10, 20, 20], "image_id": 2},
                   {"category_id": 1, "bbox": [10, 10, 20, 20], "image_id": 3}]
    path = write_json(tmp_path / "a.json", coco_document(images, annotations, names=("person", "drone")))
    report = import_labels(fresh, path, "coco", "human")
    assert not report.refused and (report.images, report.matched, report.unknown_images, report.added) == (3, 1, 2, 1)
    assert dict(report.skipped) == {"unknown class": 1, "image matches no capture": 2}
    assert [(issue.level, issue.message) for issue in report.issues] == [
        ("warning", "image 'holiday/beach.png' matches no capture of the workspace (by exported file name, its stem or capture id): "
                    "its 1 labels skipped"),
        ("warning", f"image {frame!r} is a source frame of capture {ids_of(fresh)[1]}, not its aligned image: labels live on the "
                    "aligned grid; label the images `ums export` writes. Its 1 labels skipped"),
        ("warning", "class 'drone' (1 labels) is not a class of taxonomy ums: skipped (pass --taxonomy, or add the class to labels/ "
                    "and labels/mappings.yaml)"),
    ]
    assert [(label.class_id, label.box) for label in fresh.labels()] == [(0, (10, 10, 30, 30))]


def test_only_unknown_images_change_nothing(fresh, tmp_path):
    path = write_json(tmp_path / "a.json", coco_document([{"id": 1, "file_name": "nowhere.png"}],
                                                         [{"category_id": 1, "bbox": [1, 1, 5, 5]}]))
    report = import_labels(fresh, path, "coco", "auto")
    assert (report.unknown_images, report.added, len(report.issues)) == (1, 0, 1)
    assert fresh.labels() == []


def test_boxes_are_clipped_to_the_grid_and_empty_ones_skipped(fresh, tmp_path):
    first = ids_of(fresh)[0]
    annotations = [{"category_id": 1, "bbox": [-10, 500, 30, 40]},  # clipped: (0, 500, 20, 512)
                   {"category_id": 1, "bbox": [700, 10, 20, 20]},  # right of the image: nothing left
                   {"category_id": 1, "bbox": [10, 10, 0.5, 20]},  # half a pixel wide
                   {"category_id": 1, "bbox": [10, 10, 20, -5]}]  # negative height
    path = write_json(tmp_path / "a.json", coco_document([{"id": 1, "file_name": f"{first}.png"}], annotations))
    report = import_labels(fresh, path, "coco", "human")
    assert (report.added, report.clipped, dict(report.skipped)) == (1, 1, {"box under 1 px once clipped": 3})
    assert [label.box for label in fresh.labels()] == [(0, 500, 20, 512)]
    assert [issue.message for issue in report.issues] == [
        "annotation 2: box (700.0, 10.0, 720.0, 30.0) has a side under 1 px once clipped to the 640x512 grid: skipped",
        "annotation 3: box (10.0, 10.0, 10.5, 30.0) has a side under 1 px once clipped to the 640x512 grid: skipped",
        "annotation 4: box (10.0, 10.0, 30.0, 5.0) has a side under 1 px once clipped to the 640x512 grid: skipped",
    ]
    assert all(issue.capture_id == first and issue.level == "warning" for issue in report.issues)


def test_an_image_of_another_size_is_skipped(fresh, tmp_path):
    first = ids_of(fresh)[0]
    images = [{"id": 1, "file_name": f"{first}.png", "width": 1280, "height": 1024}]
    path = write_json(tmp_path / "a.json", coco_document(images, [{"category_id": 1, "bbox": [1, 1, 50, 50]}]))
    report = import_labels(fresh, path, "coco", "human")
    assert report.added == 0 and dict(report.skipped) == {"image size differs from the aligned grid": 1}
    assert report.issues[0].message == (f"image '{first}.png' is 1280x1024, but capture {first}'s aligned grid is 640x512: "
                                        "its 1 labels would not land on the objects; skipped")


@pytest.mark.parametrize("arguments, message", [
    (("missing.json", "coco", "human"), "missing.json does not exist: name a COCO label file or folder"),
    (("a.json", "voc", "human"), "unknown label format 'voc': choose from coco, yolo"),
    (("a.json", "coco", "robot"), "unknown label source 'robot': choose from human, auto"),
    (("a.json", "coco", "human", None, "imagenet"), "no taxonomy 'imagenet' in"),
    (("a.json", "coco", "human", None, "msrs-seg"), None),  # a known taxonomy with a mapping: fine
    (("a.json", "coco", "human", None, "msrs-det"), None),
    ((".", "coco", "human"), ". is a folder without annotations.json: name the COCO JSON file to import"),
])
def test_unusable_options_raise_one_error_before_anything_is_read(fresh, tmp_path, monkeypatch, arguments, message):
    monkeypatch.chdir(tmp_path)
    write_json(tmp_path / "a.json", coco_document([], []))
    if message is None:
        assert import_labels(fresh, *arguments).added == 0
        return
    with pytest.raises(LabelImportError) as error:
        import_labels(fresh, *arguments)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


# -- protection and idempotence -------------------------------------------------------------------
def test_imported_human_labels_survive_an_automatic_run(exported, fresh):
    import_labels(fresh, exported["coco"] / "annotations.json", "coco", "human")
    first = ids_of(fresh)[0]
    autolabel = LabelRecord(class_id=3, box=(300, 300, 340, 340), score=0.7, model="yolov8x.pt@abc")
    assert fresh.replace_auto_labels(first, [autolabel]) == 1
    assert sorted(label.class_id for label in fresh.labels(first)) == [0, 2, 3]
    assert_same_boxes_without(fresh, {(first, 3)})


def assert_same_boxes_without(ws, extra: set[tuple[str, int]]) -> None:
    got = {cid: [(c, b) for c, b in labels if (cid, c) not in extra] for cid, labels in boxes_by_capture(ws).items()}
    assert got == expected_boxes(ws)


def test_an_automatic_import_never_repeats_or_replaces_a_protected_label(fresh, tmp_path):
    first = ids_of(fresh)[0]
    fresh.add_label(first, LabelRecord(class_id=0, box=(100, 100, 140, 200), source="human"))
    reviewed = fresh.add_label(first, LabelRecord(class_id=2, box=(300, 300, 400, 360), model="imported"))
    fresh.mark_label_reviewed(reviewed)
    annotations = [{"category_id": 3, "bbox": [102, 104, 40, 100]},  # repeats the human box (IoU 0.87) as a car
                   {"category_id": 3, "bbox": [500, 400, 50, 50]}]
    path = write_json(tmp_path / "a.json", coco_document([{"id": 1, "file_name": f"{first}.png"}], annotations))
    report = import_labels(fresh, path, "coco", "auto")
    assert (report.added, report.replaced, dict(report.skipped)) == (1, 0, {"repeats a human or reviewed label": 1})
    labels = fresh.labels(first)
    assert [(label.source, label.reviewed, label.box) for label in labels] == [
        ("human", False, (100, 100, 140, 200)), ("auto", True, (300, 300, 400, 360)), ("auto", False, (500, 400, 550, 450))]


def test_importing_the_same_file_twice_adds_nothing_the_second_time(exported, fresh):
    first = import_labels(fresh, exported["coco"], "coco", "human")
    again = import_labels(fresh, exported["coco"], "coco", "human")
    assert (first.added, again.added, dict(again.skipped)) == (4, 0, {"already in the workspace": 4})
    yolo = import_labels(fresh, exported["yolo"], "yolo", "human")  # the same boxes, rounded to six decimals
    assert (yolo.added, dict(yolo.skipped)) == (0, {"already in the workspace": 4})
    assert len(fresh.labels()) == 4
    assert_same_boxes(fresh, atol=1e-9)


def test_an_automatic_reimport_replaces_its_own_model_only(exported, fresh):
    first = ids_of(fresh)[0]
    other = fresh.add_label(first, LabelRecord(class_id=3, box=(300, 300, 340, 340), model="yolov8x.pt@abc"))
    once = import_labels(fresh, exported["coco"], "coco", "auto", model="det@1")
    twice = import_labels(fresh, exported["coco"], "coco", "auto", model="det@1")
    assert (once.added, once.replaced, twice.added, twice.replaced) == (4, 0, 4, 4)
    assert len(fresh.labels()) == 5 and other in [label.id for label in fresh.labels()]
    assert_same_boxes_without(fresh, {(first, 3)})
    # the file no longer lists a capture's boxes: its labels of that model go, the other model's stay
    empty = coco_document([{"id": 1, "file_name": f"{first}.png"}], [])
    cleared = import_labels(fresh, write_json(Path(exported["coco"]).parent / "empty.json", empty), "coco", "auto", model="det@1")
    assert (cleared.added, cleared.replaced) == (0, 2)
    assert [label.id for label in fresh.labels(first)] == [other]


def test_a_human_import_confirms_the_automatic_label_it_repeats(fresh, tmp_path):
    first = ids_of(fresh)[0]
    auto = fresh.add_label(first, LabelRecord(class_id=2, box=(100, 100, 220, 160), score=0.9, mask=encode_rle(CAR_MASK),
                                              model="det@1"))
    annotations = [{"category_id": 3, "bbox": [100.3, 99.8, 120, 60]}]  # within half a pixel
    path = write_json(tmp_path / "a.json", coco_document([{"id": 1, "file_name": f"{first}.png"}], annotations))
    report = import_labels(fresh, path, "coco", "human")
    assert (report.added, report.confirmed) == (0, 1)
    [label] = fresh.labels(first)
    assert (label.id, label.source, label.score, label.model) == (auto, "human", 0.9, "det@1") and label.mask is not None
    assert fresh.replace_auto_labels(first, []) == 0 and len(fresh.labels(first)) == 1


def test_a_dry_run_counts_and_writes_nothing(exported, fresh):
    report = import_labels(fresh, exported["coco"], "coco", "human", dry_run=True)
    assert report.added == 4 and fresh.labels() == []
    assert dict(report.rows())["written"] == "nothing (dry run)"


def test_a_taxonomy_without_a_mapping_to_ums_is_refused(fresh, tmp_path, monkeypatch):
    import ums.labels_import

    monkeypatch.setattr(ums.labels_import, "mapped_taxonomies", lambda: ["m3fd"])
    with pytest.raises(LabelImportError) as error:
        import_labels(fresh, write_json(tmp_path / "a.json", coco_document([], [])), "coco", "human", taxonomy="coco")
    assert str(error.value) == ("labels/mappings.yaml has no coco->ums mapping, so coco classes cannot become UMS classes "
                                "(mapped: ums, m3fd)")


def test_coco_polygons_and_plain_rle_become_masks_on_the_grid(fresh, tmp_path):
    first = ids_of(fresh)[0]
    square = np.zeros((512, 640), np.uint8)
    square[10:20, 30:50] = 1
    flat = square.flatten(order="F")  # plain (uncompressed) RLE: run lengths, column-major, starting with zeros
    changes = np.flatnonzero(np.diff(flat)) + 1
    counts = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
    annotations = [{"category_id": 3, "bbox": [100, 100, 120, 60], "segmentation": [[100, 100, 220, 100, 220, 160, 100, 160]]},
                   {"category_id": 1, "bbox": [30, 10, 20, 10], "segmentation": {"size": [512, 640], "counts": counts}}]
    path = write_json(tmp_path / "a.json", coco_document([{"id": 1, "file_name": f"{first}.png"}], annotations))
    assert import_labels(fresh, path, "coco", "human").added == 2
    car, person = sorted(fresh.labels(first), key=lambda label: -label.class_id)
    assert decode_rle(car.mask).sum() == 7200 and (decode_rle(car.mask) == CAR_MASK).all()
    assert (decode_rle(person.mask) == square.astype(bool)).all()


def test_a_mask_of_another_size_refuses_the_file(fresh, tmp_path):
    first = ids_of(fresh)[0]
    annotations = [{"category_id": 1, "bbox": [1, 1, 5, 5]},
                   {"category_id": 1, "bbox": [30, 10, 20, 10], "segmentation": {"size": [256, 320], "counts": "PPYo1"}}]
    path = write_json(tmp_path / "a.json", coco_document([{"id": 1, "file_name": f"{first}.png"}], annotations))
    report = import_labels(fresh, path, "coco", "human")
    assert report.refused and report.added == 0 and fresh.labels() == []
    assert [issue.message for issue in report.issues] == [
        "annotation 2: segmentation size [256, 320] is not the 640x512 grid ([512, 640])"]
