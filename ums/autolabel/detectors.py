"""Object detectors, always loaded from a local file.

- ultralytics models by path (``.pt`` of YOLOv5u/8/11/..., ``.yaml`` for untrained ones, and the
  formats ultralytics itself exports: ``.onnx``, ``.torchscript``, ...).
- YOLOv7 (WongKinYiu): its ``.pt`` files pickle that repository's classes, which ultralytics
  refuses, so YOLOv7 runs from its ONNX exports with onnxruntime: the end-to-end export (NMS
  inside; output ``(N, 7)``: batch, x0, y0, x1, y1, class, score) and the raw export (output
  ``(1, boxes, 5 + classes)``: cx, cy, w, h, objectness, class scores), which gets our NMS.
The format is recognised from the file (``format: auto``) or named.
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

ACCEPTED = ("ultralytics models (.pt, .yaml, or an ultralytics export such as .onnx/.torchscript), "
            "YOLOv7 ONNX exports (end-to-end with NMS, or raw output)")


class DetectorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weights: Path | None = Field(None, description="the detector file (--detector)")
    format: Literal["auto", "ultralytics", "yolov7-onnx"] = "auto"
    taxonomy: str = Field("coco", description="labels/<taxonomy>.yaml names the model's class ids")
    confidence: float = Field(0.25, ge=0, le=1)
    iou: float = Field(0.45, gt=0, lt=1)
    image_size: int = Field(640, ge=32, multiple_of=32)
    device: str = "cpu"

    @field_validator("weights")
    @classmethod
    def _registered_name(cls, value: Path | None) -> Path | None:
        # labels name their model by file name and content hash, and workers need a path, not a name
        return present_registered_file(value) or value


class Detector(Protocol):
    taxonomy: str

    def detect(self, image: np.ndarray) -> Detections:
        """Detections on a BGR (or grey) uint8 image, boxes in its pixels."""


def load_detector(config: DetectorConfig) -> Detector:
    if config.weights is None:
        raise FileNotFoundError(f"autolabel needs a detector: pass --detector PATH (config key detector.weights); "
                                f"accepted: {ACCEPTED}")
    path = resolve_weights(config.weights, "--detector")
    if not path.is_file():
        raise FileNotFoundError(f"--detector {path}: no such file (accepted: {ACCEPTED}; or a name of `ums weights list`)")
    kind = config.format if config.format != "auto" else sniff_format(path)
    if kind == "yolov7-onnx":
        return Yolov7OnnxDetector(path, config)
    return UltralyticsDetector(path, config)


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
    def __init__(self, path: Path, config: DetectorConfig):
        from ums.core.offline import configure_ultralytics

        configure_ultralytics()
        from ultralytics import YOLO

        try:
            self.model = YOLO(str(path), task="detect")
        except Exception as exc:  # noqa: BLE001 - ultralytics wraps every loading failure differently
            raise ValueError(f"--detector {path}: ultralytics cannot load it ({exc}); accepted: {ACCEPTED}") from exc
        self.config, self.taxonomy = config, config.taxonomy
        _check_names(getattr(self.model, "names", None) or {}, config.taxonomy, path)

    def detect(self, image: np.ndarray) -> Detections:
        threads = torch.get_num_threads()
        result = self.model.predict(_grey_to_bgr(image), conf=self.config.confidence, iou=self.config.iou,
                                    imgsz=self.config.image_size, device=self.config.device, verbose=False)[0]
        torch.set_num_threads(threads)  # ultralytics' device selection drops torch to one CPU thread
        boxes = result.boxes
        return Detections(boxes.xyxy.cpu().numpy(), boxes.conf.cpu().numpy(), boxes.cls.cpu().numpy().astype(np.int64),
                          self.taxonomy)


def _check_names(names: dict[int, str], taxonomy: str, path: Path) -> None:
    """A model trained on named classes must name them as the configured taxonomy does; models
    built from a YAML carry numbers only and are taken as they are."""
    from ums.taxonomy import load_taxonomy

    if not names or all(str(n).isdigit() for n in names.values()):
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
        self.size = size if isinstance(size, int) else config.image_size
        self.config, self.taxonomy = config, config.taxonomy

    def detect(self, image: np.ndarray) -> Detections:
        letterboxed, scale, pad = letterbox(_grey_to_bgr(image), self.size)
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
