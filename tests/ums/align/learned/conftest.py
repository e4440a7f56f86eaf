"""Helpers the tests of this folder share."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from ums.align.learned.checkpoint import DENSE_MATCHER_FORMAT


@pytest.fixture(scope="module")
def pair_folder(tmp_path_factory):
    """Six aligned 'pairs' made by the test: a textured image and its inverted, blurred twin."""
    root = tmp_path_factory.mktemp("pairs")
    (root / "ir").mkdir()
    (root / "vi").mkdir()
    rng = np.random.default_rng(4)
    for index in range(6):
        texture = cv2.resize(rng.integers(0, 255, (24, 32), dtype=np.uint8), (160, 128), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(root / "vi" / f"{index}.png"), cv2.cvtColor(texture, cv2.COLOR_GRAY2BGR))
        cv2.imwrite(str(root / "ir" / f"{index}.png"), cv2.GaussianBlur(255 - texture, (0, 0), 1.0))
    return root


def dense_checkpoint(path):
    """A checkpoint as `ums align-train --model dense` wrote them, before the dense matcher moved to
    bench/ (bench/dense_matcher.py reads them)."""
    torch.save({"format": DENSE_MATCHER_FORMAT, "version": 1, "config": {"width": 0.25}, "training": {},
                "state_dict": {"pyramid.stages.0.0.0.weight": torch.zeros(8, 4, 3, 3)}}, path)
    return path
