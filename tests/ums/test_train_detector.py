from __future__ import annotations

from tests.conftest import aligned_workspace

import json
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from ums import train_detector as td
from ums.core.records import LabelRecord
from ums.train_detector import RunFinished, TrainDetectorConfig, TrainDetectorError, train_detector

# a tiny untrained YOLO11 at 64 px: two epochs on three pairs take seconds on a CPU
TINY = dict(base="yolo11n.yaml", epochs=2, image_size=64, batch=4, workers=0, min_steps=0)


def review(ws, capture_id: str, *tags: str) -> None:
    ws.record_stage_result(capture_id, "review", "done", {"tags": list(tags)})


@pytest.fixture(scope="module")
def reviewed(synthetic_flight, tmp_path_factory):
    """Four pairs: two reviewed (one with boxes, one a negative), one with human labels only (an
    import), and one holding a human box beside an unreviewed automatic one (partly reviewed)."""
    ws = aligned_workspace(synthetic_flight, tmp_path_factory.mktemp("ws"))
    first, second, third, fourth = (capture.capture_id for capture in ws.captures())
    car = ws.add_label(first, LabelRecord(class_id=2, box=(100, 100, 220, 160), score=0.9))
    ws.mark_label_reviewed(car)
    ws.add_label(first, LabelRecord(class_id=0, box=(400, 200, 430, 280), source="human"))
    ws.add_label(first, LabelRecord(class_id=5, box=(10, 10, 50, 40), source="human", tags=["deleted"]))
    review(ws, first, "reviewed")
    ws.add_label(first, LabelRecord(class_id=5, box=(300, 300, 360, 340), score=0.4))  # autolabel after the review
    review(ws, second, "reviewed")
    ws.add_label(third, LabelRecord(class_id=4, box=(200, 50, 320, 120), source="human"))
    ws.add_label(fourth, LabelRecord(class_id=0, box=(50, 50, 70, 90), source="human"))
    ws.add_label(fourth, LabelRecord(class_id=2, box=(500, 400, 600, 450), score=0.8))
    yield ws
    ws.close()


@pytest.fixture(scope="module")
def trained(reviewed):
    """The run, with every way out of this machine closed: a font or weights download fails it."""
    import socket

    import ultralytics.data.utils
    import ultralytics.utils.downloads

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args} {kwargs}")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", refuse)
        patch.setattr(ultralytics.utils.downloads, "safe_download", refuse)
        patch.setattr(ultralytics.data.utils, "safe_download", refuse)
        patch.setattr(ultralytics.data.utils, "download", refuse)
        return train_detector(reviewed, TrainDetectorConfig(name="first", **TINY), progress=False)


def label_lines(folder: Path) -> dict[str, int]:
    return {path.stem: len(path.read_text().splitlines()) for path in sorted(folder.glob("*.txt"))}


@pytest.mark.slow
def test_only_settled_pairs_and_their_human_or_reviewed_labels_are_trained_on(reviewed, trained):
    first, second, third, _ = (capture.capture_id for capture in reviewed.captures())
    run = reviewed.root / "detectors" / "first"
    assert trained.run_dir == run and trained.weights == run / "best.pt"
    # 3 settled pairs; the hold-out takes the middle one of them as val
    assert trained.captures == {"train": 2, "val": 1, "test": 0, "left out (partly reviewed)": 1}
    record = json.loads((run / "captures.json").read_text())
    assert record["splits"] == {"train": [first, third], "val": [second], "test": []}
    for modality in ("infrared", "visible"):
        # the reviewed car and the human person (not the deleted box, not the later automatic truck)
        assert label_lines(run / "dataset" / "labels" / modality / "train") == {first: 2, third: 1}
        assert label_lines(run / "dataset" / "labels" / modality / "val") == {second: 0}  # a negative
    data = yaml.safe_load((run / "data.yaml").read_text())
    assert data["train"] == ["dataset/images/infrared/train", "dataset/images/visible/train"]
    assert data["names"] == {0: "person", 1: "bicycle", 2: "car", 3: "motorcycle", 4: "bus", 5: "truck"}


@pytest.mark.slow
def test_the_run_folder_holds_weights_plots_and_a_model_card(reviewed, trained):
    import torch
    from ultralytics import YOLO

    run = trained.run_dir
    for name in ("best.pt", "last.pt", "data.yaml", "results.png", "results.csv", "MODEL_CARD.md"):
        assert (run / name).is_file(), name
    assert not (run / "weights").exists()
    assert trained.classes == YOLO(str(trained.weights)).names == dict(enumerate(
        ["person", "bicycle", "car", "motorcycle", "bus", "truck"]))
    assert set(trained.metrics) == {"mAP50", "mAP50-95", "precision", "recall"}
    assert all(0.0 <= value <= 1.0 for value in trained.metrics.values()) and trained.epochs == 2
    card = (run / "MODEL_CARD.md").read_text()
    assert f"`{reviewed.root.resolve()}`" in card and "base: `yolo11n.yaml`" in card
    assert "trained from scratch on the yolo11n.yaml architecture" in card and "AGPL-3.0" in card
    assert "epochs: 2 of 2 (no early stop: val scored at the end)" in card and "| 5 | truck |" in card and "| train | 2 | 3 |" in card
    assert f"| mAP50 | {trained.metrics['mAP50']:.4f} |" in card
    assert "1 partly reviewed" in card and f"--detector {run / 'best.pt'} --taxonomy ums --force" in card
    # one val capture cannot choose an epoch: best.pt is the last one, and both the card and the report say so
    assert "`best.pt` (the last epoch: too few val captures to choose one by" in card
    assert any("best.pt holds the last epoch: 1 val capture(s)" in notice for notice in trained.notices)
    assert yaml.safe_load((run / "args.yaml").read_text())["val"] is False  # ultralytics scored the last epoch only
    best, last = (YOLO(str(run / name)).model.state_dict() for name in ("best.pt", "last.pt"))
    assert all(torch.equal(best[key], last[key]) for key in best)
    [row] = [r for r in reviewed.runs("train-detector") if "first" in r["config_json"]]
    assert row["finished_at"] and "interrupted" not in row["summary_json"]


@pytest.mark.slow
def test_a_finished_run_is_not_trained_again(reviewed, trained):
    before = (trained.run_dir / "best.pt").stat().st_mtime_ns
    for resume in (False, True):
        with pytest.raises(RunFinished, match="run first finished already .*nothing to do"):
            train_detector(reviewed, TrainDetectorConfig(name="first", resume=resume, **TINY), progress=False)
    assert (trained.run_dir / "best.pt").stat().st_mtime_ns == before


@pytest.mark.slow
def test_an_interrupted_run_resumes_from_last_pt(reviewed, monkeypatch):
    real_progress = td._epoch_progress

    @contextmanager
    def stopped_after_one_epoch(model, epochs, enabled):
        def stop(trainer):
            raise KeyboardInterrupt

        model.add_callback("on_model_save", stop)  # last.pt of epoch 1 is written
        with real_progress(model, epochs, enabled):
            yield

    monkeypatch.setattr(td, "_epoch_progress", stopped_after_one_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_detector(reviewed, TrainDetectorConfig(name="cut", **TINY), progress=False)
    run = reviewed.root / "detectors" / "cut"
    assert td.run_state(run) == "interrupted" and not (run / "MODEL_CARD.md").exists()
    with pytest.raises(TrainDetectorError, match="pass --resume to continue it"):
        train_detector(reviewed, TrainDetectorConfig(name="cut", **TINY), progress=False)
    monkeypatch.setattr(td, "_epoch_progress", real_progress)
    report = train_detector(reviewed, TrainDetectorConfig(resume=True, **TINY), progress=False)  # the latest cut run
    assert report.run_dir == run and report.resumed and report.epochs == 2
    assert td.run_state(run) == "finished" and "- resumed" in (run / "MODEL_CARD.md").read_text()
    assert report.captures["train"] == 2


@pytest.mark.slow
def test_the_trained_detector_relabels_the_unreviewed_pairs(reviewed, trained):
    from ums.autolabel.detectors import DetectorConfig
    from ums.autolabel.stage import AutolabelConfig, autolabel_workspace

    protected = sorted((label.id, label.box) for label in reviewed.labels() if label.protected)
    config = AutolabelConfig(detector=DetectorConfig(weights=trained.weights, taxonomy="ums", image_size=64,
                                                     confidence=0.0), masks=False, force=True)
    report = autolabel_workspace(reviewed, config)
    assert (report.planned, report.done, report.failed) == (4, 4, 0)
    assert sorted((label.id, label.box) for label in reviewed.labels() if label.protected) == protected
    automatic = [label for label in reviewed.labels() if not label.protected]
    assert automatic and all(label.model.startswith("best.pt@") for label in automatic)


def test_a_workspace_without_reviewed_labels_is_refused_naming_review_and_import(synthetic_flight, tmp_path):
    ws = aligned_workspace(synthetic_flight, tmp_path / "ws")
    try:
        with pytest.raises(TrainDetectorError, match=r"no reviewed labels .*`ums review`.*`ums labels import"):
            train_detector(ws, TrainDetectorConfig(**TINY), progress=False)
        first, second = (capture.capture_id for capture in ws.captures()[:2])
        ws.add_label(first, LabelRecord(class_id=2, box=(1, 1, 20, 20), source="human"))
        ws.add_label(first, LabelRecord(class_id=2, box=(30, 30, 60, 60)))
        with pytest.raises(TrainDetectorError, match="no capture .* is fully reviewed .*tag the captures"):
            train_detector(ws, TrainDetectorConfig(**TINY), progress=False)
        review(ws, first, "reviewed")
        with pytest.raises(TrainDetectorError, match="1 reviewed capture.*at least 2 are needed"):
            train_detector(ws, TrainDetectorConfig(**TINY), progress=False)
        review(ws, second, "reviewed")
        with pytest.raises(TrainDetectorError, match="give 2 reviewed captures to train on and 0 to validate on"):
            train_detector(ws, TrainDetectorConfig(split="workspace", **TINY), progress=False)
        assert not (ws.root / "detectors").exists()  # every refusal before anything is written
    finally:
        ws.close()


@pytest.mark.parametrize(("settings", "message"), [
    ({"base": "no-such-model"}, "--base no-such-model: neither a `ums weights` name"),
    ({"base": "sam_vit_b"}, "--base sam_vit_b: SAM ViT-B .* not an ultralytics detector"),
    ({"base": "yolo11q.yaml"}, "--base yolo11q.yaml: ultralytics cannot load it"),
    ({"device": "cuda:63"}, "--device cuda:63: torch sees"),
    ({"device": "tpu"}, "--device tpu: use cpu, cuda or cuda:N"),
    ({"resume": True}, "nothing to resume: no interrupted run in"),
    ({"resume": True, "name": "never"}, "nothing to resume in .*never: it holds no last.pt"),
])
def test_what_cannot_start_is_one_line(tmp_path, settings, message):
    from ums.core.workspace import Workspace

    with Workspace.open(tmp_path / "ws") as ws:
        with pytest.raises(TrainDetectorError, match=message) as raised:
            train_detector(ws, TrainDetectorConfig(**{**TINY, **settings}), progress=False)
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "ws" / "detectors").exists()


def test_run_names_are_folder_names_and_default_to_a_counter(tmp_path):
    with pytest.raises(ValueError, match="a folder name"):
        TrainDetectorConfig(name="../elsewhere")
    assert td._next_name(tmp_path) == "train-1"
    (tmp_path / "train-1").mkdir()
    (tmp_path / "train-7").mkdir()
    (tmp_path / "train-x").mkdir()
    assert td._next_name(tmp_path) == "train-8"


@pytest.mark.parametrize(("captures", "epochs", "expected"), [(4, 40, 0.0), (200, 30, 3.0)])
def test_a_first_review_trains_without_the_warm_up_that_would_take_the_whole_run(captures, epochs, expected):
    """4 reviewed pairs x 2 modalities at batch 4: 2 steps per epoch, 80 in 40 epochs, all of which
    ultralytics' warm-up (at least 100 iterations) would take; 200 pairs: 3,000 steps, warm-up kept."""
    record = {"splits": {"train": [f"c{i}" for i in range(captures)]}}
    config = TrainDetectorConfig(epochs=epochs, batch=4)
    assert td._warmup_epochs(record, config) == expected
    assert td._warmup_epochs(record, config.model_copy(update={"warmup_epochs": 1.5})) == 1.5


@pytest.mark.parametrize(("captures", "settings", "expected"),
                         [(4, {}, 120), (8, {}, 60), (200, {}, 30), (4, {"min_steps": 0}, 30),
                          (4, {"modalities": "thermal"}, 240), (4, {"batch": 2, "epochs": 200}, 200)])
def test_a_small_reviewed_set_trains_for_enough_optimizer_steps(captures, settings, expected):
    """4 pairs x 2 modalities at batch 4 are 2 steps an epoch: 240 steps take 120 epochs (40 gave
    -6 to +13 AP@0.5 points by seed, 120 gave 17-25, bench/RESULTS.md); a large set keeps its epochs."""
    record = {"splits": {"train": [f"c{i}" for i in range(captures)]}}
    assert td.planned_epochs(record, TrainDetectorConfig(**{"batch": 4, **settings})) == expected


@pytest.mark.parametrize(("val_captures", "weights_from", "expected"),
                         [(1, "auto", False), (9, "auto", False), (10, "auto", True), (1, "best-val", True),
                          (40, "last-epoch", False)])
def test_a_val_split_too_small_to_choose_an_epoch_leaves_best_pt_the_last_one(val_captures, weights_from, expected):
    """One val capture scored the epochs close to chance (bench/RESULTS.md): below 10, best.pt is the last epoch."""
    record = {"splits": {"train": ["a", "b"], "val": [f"c{i}" for i in range(val_captures)]}}
    assert td.chosen_by_val(record, TrainDetectorConfig(weights_from=weights_from)) is expected
