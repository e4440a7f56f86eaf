"""Instance masks as stored in the workspace (COCO RLE) and the semantic map made from them.

numpy and pycocotools only: export, the dataset card and review read masks without loading a model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO run-length encoding (JSON-ready: counts as text)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")}).astype(bool)


def semantic_map(masks: np.ndarray, classes: np.ndarray, scores: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """uint8 class-index image: 0 background, class id + 1 elsewhere (MSRS convention); where
    masks overlap the higher-scoring one wins."""
    semantic = np.zeros(shape, np.uint8)
    for index in np.argsort(scores):  # ascending: the best is painted last
        semantic[masks[index]] = int(classes[index]) + 1
    return semantic
