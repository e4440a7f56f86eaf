"""Object detectors, always loaded from a local file.

- ultralytics models by path (``.pt`` of YOLOv5u/8/11/..., ``.yaml`` for untrained ones, and the
  formats ultralytics itself exports: ``.onnx``, ``.torchscript``, ...).
- YOLO-World and YOLOE (open vocabulary): ultralytics models prompted with words of the dataset
  taxonomy (``classes``), their text encoder read from a local file (``ums/autolabel/open_vocab.py``).
- YOLOv7 (WongKinYiu): its ``.pt`` files pickle that repository's classes, which ultralytics
  refuses, so YOLOv7 runs from its ONNX exports with onnxruntime: the end-to-end export (NMS
  inside; output ``(N, 7)``: batch, x0, y0, x1, y1, class, score) and the raw export (output
  ``(1, boxes, 5 + classes)``: cx, cy, w, h, objectness, class scores), which gets our NMS.
The format is recognised from the file (``format: auto``; YOLO-World and YOLOE by the model class
ultralytics loads) or named. ``taxonomy: auto`` reads a model in the ``labels/`` taxonomy whose names
its classes carry (a detector trained on UMS names: ums), COCO when it carries none.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

import cv2
import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torchvision.ops import batched_nms

from ums.detections import Detections
from ums.weights import present_registered_file, resolve_weights

ACCEPTED = ("ultralytics models (.pt, .yaml, or an ultralytics export such as .onnx/.torchscript; YOLO-World and "
            "YOLOE take --classes), YOLOv7 ONNX exports (end-to-end with NMS, or raw output)")
AUTO_TAXONOMY = "auto"
NAMELESS_TAXONOMY = "coco"  # what `taxonomy: auto` reads a model in whose classes are numbers (the COCO releases)


class DetectorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weights: Path | None = Field(None, description="the detector file (--detector)")
    format: Literal["auto", "ultralytics", "yolov7-onnx", "yolo-world", "yoloe"] = "auto"
    taxonomy: str = Field("coco", description="labels/<taxonomy>.yaml names the model's class ids (auto: the one "
                          "whose names the model carries); open-vocabulary models are read in labels/ums.yaml")
    classes: list[str] | None = Field(None, description="open-vocabulary prompts (--classes): class names or synonyms "
                                      "of labels/ums.yaml; None: all of them")
    text_encoder: Path | None = Field(None, description="the open-vocabulary text encoder (--text-encoder), a file or a "
                                      "`ums weights` name; None: the one the model family was trained with")
    confidence: float = Field(0.25, ge=0, le=1)
    iou: float = Field(0.45, gt=0, lt=1)
    image_size: int = Field(640, ge=32, multiple_of=32)
    device: str = "cpu"

    @field_validator("classes", mode="before")
    @classmethod
    def _comma_separated(cls, value):
        # --classes "person,car" arrives as one string
        return [word.strip() for word in value.split(",")] if isinstance(value, str) else value

    @field_validator("weights", "text_encoder")
    @classmethod
    def _registered_name(cls, value: Path | None) -> Path | None:
        # labels name their model by file name and content hash, and workers need a path, not a name
        return present_registered_file(value) or value


class Detector(Protocol):
    taxonomy: str
    prompts: dict[int, str]  # class id -> the words an open-vocabulary detector was prompted with (else empty)

    def detect(self, image: np.ndarray, image_size: int | None = None) -> Detections:
        """Detections on a BGR (or grey) uint8 image, boxes in its pixels; ``image_size``: the input
        side it is letterboxed to (None: the configured one; a fixed-size export keeps its own)."""


def load_detector(config: DetectorConfig) -> Detector:
    if config.weights is None:
        raise FileNotFoundError(f"autolabel needs a detector: pass --detector PATH (config key detector.weights); "
                                f"accepted: {ACCEPTED}")
    path = resolve_weights(config.weights, "--detector")
    if not path.is_file():
        raise FileNotFoundError(f"--detector {path}: no such file (accepted: {ACCEPTED}; or a name of `ums weights list`)")
    kind = config.format if config.format != "auto" else sniff_format(path)
    if kind == "yolov7-onnx":
        return _closed_set(Yolov7OnnxDetector(path, config), path)
    from ums.autolabel.open_vocab import OpenVocabularyDetector, family_of

    model = load_ultralytics(path)
    family = family_of(model)
    if kind in ("yolo-world", "yoloe") and family != kind:
        raise ValueError(f"--detector {path}: detector.format is {kind}, but ultralytics loads it as "
                         f"{family or 'a fixed-class model'} (use format auto)")
    if family is not None:
        return OpenVocabularyDetector(model, path, config, family)
    return _closed_set(UltralyticsDetector(model, path, config), path)


def _closed_set(detector: Detector, path: Path) -> Detector:
    if detector.config.classes is not None:
        raise ValueError(f"--classes needs an open-vocabulary detector (YOLO-World or YOLOE, e.g. `ums weights` "
                         f"yolov8s-worldv2 or yoloe-11s-seg); {path.name} has fixed classes: leave --classes out")
    return detector


def load_ultralytics(path: Path):
    from ums.core.offline import configure_ultralytics

    configure_ultralytics()
    from ultralytics import YOLO

    try:
        return YOLO(str(path), task="detect")  # boxes only, also from a segmentation model
    except Exception as exc:  # noqa: BLE001 - ultralytics wraps every loading failure differently
        raise ValueError(f"--detector {path}: ultralytics cannot load it ({exc}); accepted: {ACCEPTED}") from exc


def predict_boxes(model, image: np.ndarray, config: DetectorConfig,
                  image_size: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """xyxy boxes, scores and class indices of one ultralytics prediction."""
    threads = torch.get_num_threads()
    result = model.predict(_grey_to_bgr(image), conf=config.confidence, iou=config.iou,
                           imgsz=image_size or config.image_size,
                           device=config.device, verbose=False)[0]
    torch.set_num_threads(threads)  # ultralytics' device selection drops torch to one CPU thread
    boxes = result.boxes
    return boxes.xyxy.cpu().numpy(), boxes.conf.cpu().numpy(), boxes.cls.cpu().numpy().astype(np.int64)


def sniff_format(path: Path) -> str:
    if path.suffix.lower() != ".onnx":
        return "ultralytics"
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise ValueError(f"--detector {path}: not a readable ONNX model ({exc})") from exc
    shape = session.get_outputs()[0].shape
    if len(shape) == 3 and isinstance(shape[1], int) and isinstance(shape[2], int) and shape[1] < shape[2]:
        return "ultralytics"  # ultralytics exports (1, 4 + classes, anchors)
    return "yolov7-onnx"


def _grey_to_bgr(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image


class UltralyticsDetector:
    def __init__(self, model, path: Path, config: DetectorConfig):
        self.model, self.config, self.prompts = model, config, {}
        names = getattr(self.model, "names", None) or {}
        self.taxonomy = model_taxonomy(names, config.taxonomy, path)
        _check_names(names, self.taxonomy, path)

    def detect(self, image: np.ndarray, image_size: int | None = None) -> Detections:
        return Detections(*predict_boxes(self.model, image, self.config, image_size), self.taxonomy)


def _numbers_only(names: dict[int, str]) -> bool:
    """Models built from a YAML carry numbers, not names."""
    return not names or all(str(n).isdigit() for n in names.values())


def model_taxonomy(names: dict[int, str], configured: str, path: Path) -> str:
    """The configured taxonomy, or for ``auto`` the shipped one whose names the model carries."""
    from ums.taxonomy import shipped_taxonomies, taxonomy_with_names

    if configured != AUTO_TAXONOMY:
        return configured
    if _numbers_only(names):
        return NAMELESS_TAXONOMY
    found = taxonomy_with_names(names)
    if found is None:
        sample = ", ".join(f"{i}: {n!r}" for i, n in list(names.items())[:3])
        raise ValueError(f"--detector {path}: its classes ({sample}, ...) are those of no labels/ taxonomy "
                         f"({', '.join(shipped_taxonomies())}); add labels/<name>.yaml naming them and set detector.taxonomy")
    return found


def _check_names(names: dict[int, str], taxonomy: str, path: Path) -> None:
    """A model trained on named classes must name them as the configured taxonomy does; models
    built from a YAML carry numbers only and are taken as they are."""
    from ums.taxonomy import load_taxonomy

    if _numbers_only(names):
        return
    expected = load_taxonomy(taxonomy).names
    wrong = {i: n for i, n in names.items() if expected.get(int(i)) != n}
    if wrong:
        sample = ", ".join(f"{i}: {n!r}" for i, n in list(wrong.items())[:3])
        raise ValueError(f"--detector {path}: its classes ({sample}, ...) are not those of taxonomy {taxonomy!r}; "
                         "set detector.taxonomy to the labels/ file that names them")


class Yolov7OnnxDetector:
    def __init__(self, path: Path, config: DetectorConfig):
        import onnxruntime

        try:
            self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"--detector {path}: not a readable ONNX model ({exc})") from exc
        self.input = self.session.get_inputs()[0]
        shape = self.session.get_outputs()[0].shape
        if len(shape) == 2 and shape[-1] == 7:
            self.kind = "end-to-end"
        elif len(shape) == 3 and isinstance(shape[-1], int) and shape[-1] >= 6:
            self.kind = "raw"
        else:
            raise ValueError(f"--detector {path}: output shape {shape} is neither a YOLOv7 end-to-end export "
                             "(N, 7) nor a raw export (1, boxes, 5 + classes)")
        size = self.input.shape[-1]
        self.fixed = isinstance(size, int)
        self.size = size if self.fixed else config.image_size
        # YOLOv7's releases are COCO models and its exports carry no class names
        self.config, self.prompts = config, {}
        self.taxonomy = NAMELESS_TAXONOMY if config.taxonomy == AUTO_TAXONOMY else config.taxonomy

    def detect(self, image: np.ndarray, image_size: int | None = None) -> Detections:
        # the export's input size is fixed (``image_size`` applies where the input is dynamic)
        letterboxed, scale, pad = letterbox(_grey_to_bgr(image), self.size if self.fixed else image_size or self.size)
        blob = cv2.cvtColor(letterboxed, cv2.COLOR_BGR2RGB).transpose(2, 0, 1)[None].astype(np.float32) / 255.0
        output = self.session.run(None, {self.input.name: blob})[0]
        boxes, scores, classes = self._decode(np.asarray(output, np.float32))
        boxes = (boxes - np.array([pad[0], pad[1], pad[0], pad[1]], np.float32)) / scale
        h, w = image.shape[:2]
        boxes = np.clip(boxes, 0, [w, h, w, h])
        return Detections(boxes, scores, classes, self.taxonomy)

    def _decode(self, output: np.ndarray):
        if self.kind == "end-to-end":
            rows = output[output[:, 6] >= self.config.confidence]
            return rows[:, 1:5], rows[:, 6], rows[:, 5].astype(np.int64)
        rows = output[0]
        class_scores = rows[:, 5:] * rows[:, 4:5]
        classes = class_scores.argmax(1)
        scores = class_scores[np.arange(len(rows)), classes]
        keep = scores >= self.config.confidence
        centre, size = rows[keep, :2], rows[keep, 2:4]
        boxes = np.concatenate([centre - size / 2, centre + size / 2], 1)
        scores, classes = scores[keep], classes[keep]
        kept = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(classes),
                           self.config.iou).numpy()
        return boxes[kept], scores[kept], classes[kept].astype(np.int64)


def letterbox(image: np.ndarray, size: int, fill: int = 114) -> tuple[np.ndarray, float, tuple[float, float]]:
    """Resize keeping the aspect ratio and pad to ``size`` x ``size`` (as YOLOv7 trains)."""
    h, w = image.shape[:2]
    scale = min(size / h, size / w)
    new_w, new_h = round(w * scale), round(h * scale)
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    pad_x, pad_y = (size - new_w) / 2, (size - new_h) / 2
    top, left = round(pad_y - 0.1), round(pad_x - 0.1)
    out = cv2.copyMakeBorder(resized, top, size - new_h - top, left, size - new_w - left, cv2.BORDER_CONSTANT,
                             value=(fill, fill, fill))
    return out, scale, (left, top)
