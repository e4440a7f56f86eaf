from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything.build_sam import _build_sam

from ums.detections import Detections
from ums.autolabel.sam import SamConfig, load_sam, segment_boxes, segment_boxes_one_by_one
from ums.masks import decode_rle, encode_rle, semantic_map

from tests.ums.autolabel.models import TINY_SAM as TINY


@pytest.fixture(scope="module")
def tiny_sam(tmp_path_factory):
    """A tiny SAM from segment-anything's own builder, saved as a plain state dict like the
    official checkpoints."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sam") / "sam_tiny.pth"
    torch.save(_build_sam(**TINY).state_dict(), path)
    return load_sam(SamConfig(checkpoint=path, model_type="custom", architecture=TINY))


def boxes(*rows):
    return Detections(np.array(rows, float), np.linspace(0.9, 0.5, len(rows)), np.arange(len(rows)) % 3, "ums")


def test_batched_prompts_give_one_mask_per_box(tiny_sam):
    image = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    detections = boxes([10, 10, 60, 80], [70, 20, 150, 100], [0, 0, 20, 20])
    masks, scores = segment_boxes(tiny_sam, image, detections)
    assert masks.shape == (3, 120, 160) and masks.dtype == bool and scores.shape == (3,)
    one_by_one = segment_boxes_one_by_one(tiny_sam, image, detections)
    # the same decoder on the same embedding: batching changes nothing but the cost
    assert (masks == one_by_one).mean() > 0.999


def test_no_boxes_no_masks(tiny_sam):
    masks, scores = segment_boxes(tiny_sam, np.zeros((50, 60), np.uint8), Detections.empty("ums"))
    assert masks.shape == (0, 50, 60) and scores.shape == (0,)


def test_checkpoint_errors_name_the_flag(tmp_path):
    with pytest.raises(FileNotFoundError, match="--sam PATH"):
        load_sam(SamConfig())
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_sam(SamConfig(checkpoint=tmp_path / "sam_vit_b.pth"))
    tiny = tmp_path / "tiny.pth"
    torch.save(_build_sam(**TINY).state_dict(), tiny)
    with pytest.raises(ValueError, match="not a vit_b SAM checkpoint"):
        load_sam(SamConfig(checkpoint=tiny, model_type="vit_b"))  # wrong architecture for the file
    with pytest.raises(ValueError, match="model_type"):
        load_sam(SamConfig(checkpoint=tiny, model_type="vit_x"))


def test_rle_round_trip_and_semantic_map():
    mask = np.zeros((40, 50), bool)
    mask[5:20, 10:30] = True
    rle = encode_rle(mask)
    assert rle["size"] == [40, 50] and isinstance(rle["counts"], str)
    np.testing.assert_array_equal(decode_rle(rle), mask)
    other = np.zeros_like(mask)
    other[10:30, 20:40] = True
    semantic = semantic_map(np.stack([mask, other]), np.array([0, 2]), np.array([0.9, 0.5]), mask.shape)
    assert semantic[6, 11] == 1 and semantic[25, 35] == 3 and semantic[0, 0] == 0
    assert semantic[15, 25] == 1  # the overlap goes to the better mask
