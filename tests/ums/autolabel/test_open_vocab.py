"""Open-vocabulary detectors: tiny YOLOE / YOLO-World models from ultralytics' YAMLs, stand-in text
encoders written the way the real ones are, and no network at any step."""

from __future__ import annotations

import socket
import urllib.request

import numpy as np
import pytest
import torch

from tests.ums.autolabel.models import (
    TINY_VOCAB_SIZE,
    tiny_clip_checkpoint,
    tiny_clip_vocabulary,
    tiny_torchscript_text_encoder,
    tiny_ultralytics_model,
)
from ums.autolabel.detectors import DetectorConfig, load_detector
from ums.autolabel.open_vocab import (
    ClipTokenizer,
    Prompt,
    prompts_by_class,
    resolve_prompts,
    to_taxonomy,
)
from ums.taxonomy import load_taxonomy

IMAGE = np.random.default_rng(3).integers(0, 256, (240, 320, 3), dtype=np.uint8)
EVERY_WORD = ["person", "pedestrian", "people", "bicycle", "bike", "car", "vehicle", "van", "suv", "motorcycle",
              "motorbike", "scooter", "bus", "coach", "truck", "lorry", "pickup truck"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("open-vocab")
    return {
        "yoloe": tiny_ultralytics_model(folder / "yoloe-11n-seg.pt", "yoloe-11n-seg.yaml"),
        "world": tiny_ultralytics_model(folder / "yolov8n-worldv2.pt", "yolov8n-worldv2.yaml"),
        "closed": tiny_ultralytics_model(folder / "yolov8n.pt", "yolov8n.yaml"),
        "mobileclip": tiny_torchscript_text_encoder(folder / "mobileclip_blt.ts"),
        "narrow": tiny_torchscript_text_encoder(folder / "narrow.ts", width=256),
        "clip": tiny_clip_checkpoint(folder / "ViT-B-32.pt"),
    }


@pytest.fixture
def home(tmp_path, monkeypatch):
    """UMS_HOME holding CLIP's (tiny) vocabulary, as `ums weights download clip_bpe_vocab` leaves it."""
    monkeypatch.setenv("UMS_HOME", str(tmp_path))
    tiny_clip_vocabulary(tmp_path / "bpe_simple_vocab_16e6.txt.gz")
    return tmp_path


@pytest.fixture
def offline(monkeypatch):
    """Any connection, urllib request, ultralytics download or package install fails the test loudly."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network use: {args[:2]}")

    from ultralytics.utils import checks, downloads

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(downloads, "safe_download", refuse)  # what attempt_download_asset calls for a missing file
    monkeypatch.setattr(checks, "check_requirements", refuse)  # what ultralytics' text models call to pip-install clip


def tiny_tokens(texts):
    return ClipTokenizer(_vocabulary())(texts)


def _vocabulary():
    import os
    from pathlib import Path

    return Path(os.environ["UMS_HOME"]) / "bpe_simple_vocab_16e6.txt.gz"


# -- prompts and tokens ------------------------------------------------------------------------


def test_the_tokenizer_merges_as_clip_does(home):
    tokens = tiny_tokens(["car", "  CAR ", "cars", "pe", " ".join(["x"] * 100)])
    start, end = TINY_VOCAB_SIZE - 2, TINY_VOCAB_SIZE - 1
    assert tokens.shape == (5, 77) and (start, end) == (515, 516)
    assert tokens[0, :4].tolist() == [515, 513, 516, 0]  # "car</w>" is the second merge
    assert torch.equal(tokens[0], tokens[1])  # case and spaces aside
    # "ca" (512), then "r" and "s</w>" unmerged: byte tokens count from "!", end-of-word ones from 256
    assert tokens[2, :5].tolist() == [515, 512, ord("r") - 33, 256 + ord("s") - 33, 516]
    # the merge "p e" joins an e inside a word, not the word's last "e</w>"
    assert tokens[3, :4].tolist() == [515, ord("p") - 33, 256 + ord("e") - 33, 516]
    assert tokens[4, 0] == 515 and tokens[4, -1] == 516 and (tokens[4, 1:-1] == 256 + ord("x") - 33).all()


def test_prompts_are_class_names_or_synonyms():
    ums = load_taxonomy("ums")
    prompts = resolve_prompts(["Pedestrian", "car", " van ", "car"], ums)
    assert prompts == [Prompt("Pedestrian", 0), Prompt("car", 2), Prompt("van", 2)]
    assert prompts_by_class(prompts) == {0: "Pedestrian", 2: "car, van"}
    every = resolve_prompts(None, ums)
    assert [p.text for p in every] == EVERY_WORD
    assert [p.class_id for p in every] == [0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 3, 4, 4, 5, 5, 5]


def test_an_unknown_prompt_is_one_line_listing_the_classes():
    with pytest.raises(ValueError) as error:
        resolve_prompts(["person", "dog"], load_taxonomy("ums"))
    message = str(error.value)
    assert "\n" not in message and message.startswith("--classes 'dog' is no class or synonym of labels/ums.yaml")
    assert "person (pedestrian, people)" in message and "truck (lorry, pickup truck)" in message
    with pytest.raises(ValueError, match="--classes names no class"):
        resolve_prompts([], load_taxonomy("ums"))


def test_boxes_of_one_class_from_several_prompts_merge():
    prompts = [Prompt("person", 0), Prompt("pedestrian", 0), Prompt("car", 2)]
    boxes = np.array([[10, 10, 50, 90], [12, 10, 50, 92], [100, 100, 200, 150], [11, 10, 51, 90]], np.float32)
    found = to_taxonomy(boxes, np.array([0.6, 0.8, 0.7, 0.5]), np.array([0, 1, 2, 2]), prompts, 0.45, "ums")
    # the pedestrian box outranks the person box on the same walker; a car box there is another class
    assert found.taxonomy == "ums" and found.classes.tolist() == [0, 2, 2]
    np.testing.assert_allclose(found.scores, [0.8, 0.7, 0.5])
    np.testing.assert_allclose(found.boxes[0], [12, 10, 50, 92])
    assert len(to_taxonomy(np.zeros((0, 4)), np.zeros(0), np.zeros(0), prompts, 0.45, "ums")) == 0


# -- the detectors -----------------------------------------------------------------------------


@pytest.mark.slow
def test_yoloe_takes_the_prompts_offline(files, home, offline):
    config = DetectorConfig(weights=files["yoloe"], classes="person, pedestrian,car", text_encoder=files["mobileclip"],
                            confidence=1e-6, image_size=320)
    detector = load_detector(config)
    assert detector.family == "yoloe" and detector.taxonomy == "ums"
    assert detector.model.model.names == {0: "person", 1: "pedestrian", 2: "car"}
    assert detector.prompts == {0: "person, pedestrian", 2: "car"}
    # the model holds its head's projection of the encoder's embeddings, as ultralytics' get_text_pe gives it
    encoder = torch.jit.load(str(files["mobileclip"]))
    with torch.no_grad():
        expected = detector.model.model.model[-1].get_tpe(encoder(tiny_tokens(["person", "pedestrian", "car"]))[None])
    torch.testing.assert_close(detector.model.model.pe, expected)

    raw = detector.model.predict(IMAGE, conf=1e-6, iou=0.45, imgsz=320, device="cpu", verbose=False)[0].boxes
    found = detector.detect(IMAGE)
    assert 0 < len(found) <= len(raw)
    by_box = {tuple(np.round(b, 3)): int(c) for b, c in zip(raw.xyxy.numpy(), raw.cls.numpy())}
    prompt_class = {0: 0, 1: 0, 2: 2}
    assert all(prompt_class[by_box[tuple(np.round(b, 3))]] == c for b, c in zip(found.boxes, found.classes))


@pytest.mark.slow
def test_yolo_world_embeds_every_word_with_clip(files, home, offline):
    detector = load_detector(DetectorConfig(weights=files["world"], text_encoder=files["clip"], confidence=1e-6,
                                            image_size=320))
    assert detector.family == "yolo-world" and detector.model.model.names == EVERY_WORD
    assert detector.prompts[0] == "person, pedestrian, people" and detector.prompts[5] == "truck, lorry, pickup truck"
    from ums.autolabel.open_vocab import ClipTextTower

    tower = ClipTextTower.from_state_dict(torch.jit.load(str(files["clip"])).state_dict())
    with torch.no_grad():
        expected = tower(tiny_tokens(EVERY_WORD))[None]
    torch.testing.assert_close(detector.model.model.txt_feats, expected)
    assert detector.model.model.model[-1].nc == 17
    found = detector.detect(IMAGE)
    assert len(found) > 0 and found.taxonomy == "ums" and set(found.classes) <= set(range(6))


@pytest.mark.slow
def test_the_default_text_encoder_is_the_familys_registered_one(files, home, offline):
    config = DetectorConfig(weights=files["yoloe"], classes=["car"])
    with pytest.raises(FileNotFoundError) as error:
        load_detector(config)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("--text-encoder mobileclip_blt: registered weights, not downloaded")
    assert "run `ums weights download mobileclip_blt`" in message

    (home / "mobileclip_blt.ts").write_bytes(files["mobileclip"].read_bytes())
    detector = load_detector(DetectorConfig(weights=files["yoloe"], classes=["car"]))
    assert detector.model.model.names == {0: "car"} and detector.prompts == {2: "car"}
    (home / "bpe_simple_vocab_16e6.txt.gz").unlink()
    with pytest.raises(FileNotFoundError, match="ums weights download clip_bpe_vocab"):
        load_detector(DetectorConfig(weights=files["yoloe"], classes=["car"]))


@pytest.mark.slow
def test_wrong_combinations_are_one_line_errors(files, home, offline, tmp_path):
    cases = [
        (DetectorConfig(weights=files["closed"], classes=["car"]), "--classes needs an open-vocabulary detector"),
        (DetectorConfig(weights=files["closed"], format="yoloe"), "detector.format is yoloe, but ultralytics loads it "
                                                                  "as a fixed-class model"),
        (DetectorConfig(weights=files["yoloe"], text_encoder=files["narrow"]), "its embeddings have 256 values, "
                                                                               "--detector yoloe-11n-seg.pt takes 512"),
        (DetectorConfig(weights=files["yoloe"], text_encoder=tmp_path / "nowhere.ts"),
         "--text-encoder .*: no such file"),
        (DetectorConfig(weights=files["yoloe"], classes=["car", "dragon"], text_encoder=files["mobileclip"]),
         "--classes 'dragon' is no class or synonym"),
    ]
    for config, message in cases:
        with pytest.raises((ValueError, FileNotFoundError), match=message) as error:
            load_detector(config)
        assert "\n" not in str(error.value)
