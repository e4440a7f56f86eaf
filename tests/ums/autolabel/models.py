"""Tiny models for the autolabel tests, built from the libraries' own classes and written the way
real weights are: ONNX exports with YOLOv7's output signatures, a SAM state dict."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn as nn
from segment_anything.build_sam import _build_sam

TINY_SAM = dict(encoder_embed_dim=32, encoder_depth=1, encoder_num_heads=1, encoder_global_attn_indexes=[0])


class FixedOutput(nn.Module):
    """An 'exported detector' whose output is known."""

    def __init__(self, output: torch.Tensor):
        super().__init__()
        self.register_buffer("output", output)

    def forward(self, images):
        return self.output + 0 * images.mean()  # keeps the input in the graph


def export_onnx(module: nn.Module, path: Path, size: int = 640) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, torch.zeros(1, 3, size, size), str(path), dynamo=False,
                          input_names=["images"], output_names=["output"])
    return path


def yolov7_end_to_end(path: Path, rows: list[list[float]]) -> Path:
    """(N, 7) rows: batch, x0, y0, x1, y1 (letterboxed 640 px), COCO class, score."""
    return export_onnx(FixedOutput(torch.tensor(rows, dtype=torch.float32)), path)


def tiny_sam_checkpoint(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    torch.save(_build_sam(**TINY_SAM).state_dict(), path)
    return path


# 640x512 pairs letterbox into 640x640 with 64 px above: a car, a person, and a COCO dog (no UMS class)
ROWS = [[0, 100, 164, 220, 224, 2, 0.9], [0, 400, 264, 430, 344, 0, 0.7], [0, 500, 100, 560, 150, 16, 0.8]]
