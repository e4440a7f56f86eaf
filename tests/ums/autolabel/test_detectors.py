from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.ums.autolabel.models import FixedOutput
from tests.ums.autolabel.models import export_onnx as export
from ums.autolabel.detectors import DetectorConfig, letterbox, load_detector, sniff_format


def test_yolov7_end_to_end_export(tmp_path):
    rows = torch.tensor([[0, 100, 150, 300, 350, 2, 0.9], [0, 10, 10, 20, 20, 0, 0.1]], dtype=torch.float32)
    path = export(FixedOutput(rows), tmp_path / "yolov7-e2e.onnx")
    assert sniff_format(path) == "yolov7-onnx"
    detector = load_detector(DetectorConfig(weights=path))
    assert detector.kind == "end-to-end"
    # a 1280x960 image letterboxes to 640x640 at scale 0.5 with 80 px of padding above and below
    found = detector.detect(np.zeros((960, 1280, 3), np.uint8))
    assert len(found) == 1 and found.classes.tolist() == [2] and found.taxonomy == "coco"
    np.testing.assert_allclose(found.boxes[0], [200, 140, 600, 540], atol=1e-3)
    assert found.scores[0] == pytest.approx(0.9)
    # the export's input is fixed at 640: an input size asked per call (a slice's) cannot change it
    np.testing.assert_allclose(detector.detect(np.zeros((960, 1280, 3), np.uint8), image_size=320).boxes[0],
                               [200, 140, 600, 540], atol=1e-3)


def test_yolov7_raw_export_gets_our_nms(tmp_path):
    raw = torch.zeros(1, 120, 85)  # like YOLOv7: many more candidate boxes than 5 + classes
    raw[0, 0, :6] = torch.tensor([200, 250, 200, 200, 0.9, 0.0])
    raw[0, 0, 5 + 2] = 0.95  # car, 0.855
    raw[0, 1, :5] = torch.tensor([205, 250, 200, 200, 0.6])
    raw[0, 1, 5 + 2] = 0.9  # the same car, weaker: suppressed
    raw[0, 2, :5] = torch.tensor([500, 400, 40, 80, 0.8])
    raw[0, 2, 5 + 0] = 0.75  # a person, 0.6
    raw[0, 3, :5] = torch.tensor([50, 50, 10, 10, 0.1])
    raw[0, 3, 5 + 0] = 0.5  # too weak
    detector = load_detector(DetectorConfig(weights=export(FixedOutput(raw), tmp_path / "yolov7-raw.onnx")))
    assert detector.kind == "raw"
    found = detector.detect(np.zeros((640, 640), np.uint8))  # grey input is accepted
    order = np.argsort(-found.scores)
    assert found.classes[order].tolist() == [2, 0]
    np.testing.assert_allclose(found.scores[order], [0.855, 0.6], atol=1e-5)
    np.testing.assert_allclose(found.boxes[order][0], [100, 150, 300, 350], atol=1e-3)


def test_ultralytics_model_by_path(tmp_path):
    from ums.core.offline import configure_ultralytics

    configure_ultralytics()
    from ultralytics import YOLO

    path = tmp_path / "tiny.pt"
    YOLO("yolov8n.yaml").save(str(path))  # random weights, from the package's own model definition
    detector = load_detector(DetectorConfig(weights=path, confidence=0.0001, image_size=320))
    threads = torch.get_num_threads()
    found = detector.detect(np.full((240, 320, 3), 90, np.uint8))
    assert torch.get_num_threads() == threads  # the rest of the process keeps its CPU threads
    assert found.taxonomy == "coco" and len(found) > 0
    assert (found.boxes[:, [0, 2]] <= 320 + 1e-3).all() and (found.boxes[:, [1, 3]] <= 240 + 1e-3).all()
    assert ((0 <= found.classes) & (found.classes < 80)).all()
    assert list(detector.model.predictor.imgsz) == [320, 320]  # the configured input size
    detector.detect(np.full((240, 320, 3), 90, np.uint8), image_size=160)  # a slice's own size, per call
    assert list(detector.model.predictor.imgsz) == [160, 160]


def test_class_names_must_match_the_taxonomy(tmp_path):
    from ums.core.offline import configure_ultralytics

    configure_ultralytics()
    from ultralytics import YOLO

    model = YOLO("yolov8n.yaml")
    model.model.names = {i: f"thing {i}" for i in range(80)}
    path = tmp_path / "named.pt"
    model.save(str(path))
    with pytest.raises(ValueError, match="detector.taxonomy"):
        load_detector(DetectorConfig(weights=path))


def test_taxonomy_auto_reads_a_model_in_the_taxonomy_of_its_names(tmp_path):
    from ums.core.offline import configure_ultralytics

    configure_ultralytics()
    from ultralytics import YOLO

    model = YOLO("yolov8n.yaml")
    model.model.names = {i: f"{i}" for i in range(80)}
    model.save(str(tmp_path / "numbers.pt"))
    assert load_detector(DetectorConfig(weights=tmp_path / "numbers.pt", taxonomy="auto")).taxonomy == "coco"
    model.model.names = {0: "person", 1: "bicycle", 2: "car", 3: "motorcycle", 4: "bus", 5: "truck"}
    model.save(str(tmp_path / "ums-trained.pt"))  # as `ums train-detector` names its classes
    detector = load_detector(DetectorConfig(weights=tmp_path / "ums-trained.pt", taxonomy="auto"))
    assert detector.taxonomy == "ums" and detector.prompts == {}
    model.model.names = {0: "cat", 1: "dog"}
    model.save(str(tmp_path / "pets.pt"))
    with pytest.raises(ValueError, match="are those of no labels/ taxonomy"):
        load_detector(DetectorConfig(weights=tmp_path / "pets.pt", taxonomy="auto"))
    with pytest.raises(ValueError, match="detector.taxonomy"):  # an explicit taxonomy is held to as before
        load_detector(DetectorConfig(weights=tmp_path / "ums-trained.pt"))


def test_classes_arrive_as_one_comma_separated_string():
    assert DetectorConfig(classes=" person, car ,van").classes == ["person", "car", "van"]
    assert DetectorConfig().classes is None and DetectorConfig().text_encoder is None


def test_missing_or_wrong_weights_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="--detector PATH"):
        load_detector(DetectorConfig())
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_detector(DetectorConfig(weights=tmp_path / "yolov7.onnx"))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not onnx")
    with pytest.raises(ValueError, match="not a readable ONNX model"):
        load_detector(DetectorConfig(weights=junk))
    odd = export(FixedOutput(torch.zeros(3)), tmp_path / "odd.onnx")
    with pytest.raises(ValueError, match="neither a YOLOv7 end-to-end export"):
        load_detector(DetectorConfig(weights=odd, format="yolov7-onnx"))


def test_letterbox_geometry():
    image = np.zeros((300, 600, 3), np.uint8)
    out, scale, (left, top) = letterbox(image, 640)
    assert out.shape == (640, 640, 3) and scale == pytest.approx(640 / 600) and (left, top) == (0, 160)
