"""Instance masks from segment-anything, prompted by the merged boxes.

One image embedding per image and all of its boxes in one batched prompt call (``predict_torch``
with boxes transformed to SAM's input frame): the image encoder dominates the cost, so prompting
box by box would repeat nothing expensive but the decoder, yet still costs a call per box.
Checkpoints are the official ``sam_vit_{b,l,h}`` state dicts (or any state dict of a model built by
segment-anything's own builder with the architecture given in the config, as tests do).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from segment_anything import SamPredictor
from segment_anything.build_sam import _build_sam

from ums.detections import Detections
from ums.weights import present_registered_file, registered_model_type, resolve_weights

ARCHITECTURES = {
    "vit_b": dict(encoder_embed_dim=768, encoder_depth=12, encoder_num_heads=12, encoder_global_attn_indexes=[2, 5, 8, 11]),
    "vit_l": dict(encoder_embed_dim=1024, encoder_depth=24, encoder_num_heads=16, encoder_global_attn_indexes=[5, 11, 17, 23]),
    "vit_h": dict(encoder_embed_dim=1280, encoder_depth=32, encoder_num_heads=16, encoder_global_attn_indexes=[7, 15, 23, 31]),
}


class SamConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    checkpoint: Path | None = Field(None, description="SAM weights (--sam)")
    model_type: str = Field("vit_b", description="vit_b, vit_l, vit_h, or custom with `architecture`")
    architecture: dict[str, Any] | None = Field(None, description="encoder sizes for model_type custom")
    # Which image SAM segments: the visible one (sharper edges by day), the thermal one (people and
    # vehicles stand out at night), or per box the modality whose detector scored it higher.
    image: Literal["visible", "thermal", "best"] = "visible"
    device: str = "cpu"

    @field_validator("checkpoint")
    @classmethod
    def _registered_name(cls, value: Path | None) -> Path | None:
        # labels name their model by file name and content hash, and workers need a path, not a name
        return present_registered_file(value) or value


def load_sam(config: SamConfig):
    """A SamPredictor for ``config.checkpoint``; errors name the --sam flag."""
    if config.checkpoint is None:
        raise FileNotFoundError("masks need SAM weights: pass --sam PATH (config key sam.checkpoint), an official "
                                "sam_vit_b/l/h checkpoint; or --no-masks for boxes only")
    path = resolve_weights(config.checkpoint, "--sam")
    if not path.is_file():
        raise FileNotFoundError(f"--sam {path}: no such file")
    implied = registered_model_type(config.checkpoint)
    if implied and config.model_type in ARCHITECTURES and config.model_type != implied:
        raise ValueError(f"--sam {config.checkpoint} is a {implied} checkpoint but sam.model_type is {config.model_type}: "
                         f"add --sam-type {implied}")
    architecture = config.architecture if config.model_type == "custom" else ARCHITECTURES.get(config.model_type)
    if architecture is None:
        raise ValueError(f"sam.model_type {config.model_type!r}: choose vit_b, vit_l, vit_h, or custom with sam.architecture")
    model = _build_sam(**architecture, checkpoint=None)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001 - unpickling and shape mismatches alike mean a wrong file
        raise ValueError(f"--sam {path}: not a {config.model_type} SAM checkpoint ({str(exc)[:300]})") from exc
    return SamPredictor(model.to(config.device).eval())


@torch.no_grad()
def segment_boxes(predictor: SamPredictor, image: np.ndarray, detections: Detections) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W) bool masks and SAM's (N,) quality scores for every box, in one prompt call."""
    h, w = image.shape[:2]
    if len(detections) == 0:
        return np.zeros((0, h, w), bool), np.zeros(0, np.float32)
    _set_image(predictor, image)
    return _prompt(predictor, detections.boxes, (h, w))


@torch.no_grad()
def segment_boxes_in_chunks(predictor: SamPredictor, image: np.ndarray, boxes: np.ndarray,
                            chunk: int = 8) -> Iterator[np.ndarray]:
    """(n, H, W) bool masks of ``chunk`` boxes at a time on one image embedding: on a native
    visible view (~2600x2000) SAM's full-size float logits take ~20 MB per box, so a pair with many
    boxes is prompted in parts, each consumed before the next."""
    if len(boxes) == 0:
        return
    _set_image(predictor, image)
    for start in range(0, len(boxes), chunk):
        yield _prompt(predictor, np.asarray(boxes[start:start + chunk], np.float32), image.shape[:2])[0]


def _set_image(predictor: SamPredictor, image: np.ndarray) -> None:
    rgb = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    predictor.set_image(rgb)


def _prompt(predictor: SamPredictor, boxes: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    tensor = torch.as_tensor(boxes, dtype=torch.float32, device=predictor.device)
    transformed = predictor.transform.apply_boxes_torch(tensor, size)
    masks, scores, _ = predictor.predict_torch(point_coords=None, point_labels=None, boxes=transformed,
                                               multimask_output=False)
    return masks[:, 0].cpu().numpy(), scores[:, 0].cpu().numpy()


def segment_boxes_one_by_one(predictor: SamPredictor, image: np.ndarray, detections: Detections) -> np.ndarray:
    """The unbatched way (one prompt call per box), kept for the benchmark's comparison."""
    rgb = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    predictor.set_image(rgb)
    masks = [predictor.predict(box=box, multimask_output=False)[0][0] for box in detections.boxes]
    return np.stack(masks) if masks else np.zeros((0,) + image.shape[:2], bool)
