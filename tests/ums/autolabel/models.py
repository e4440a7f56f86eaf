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


# -- open vocabulary: tiny YOLO-World / YOLOE models and stand-ins for their text encoders ----------

# a CLIP vocabulary file of three merges: 512 byte tokens, then "ca" (512), "car</w>" (513), "pe" (514),
# then the start (515) and end (516) tokens
TINY_MERGES = ["c a", "ca r</w>", "p e"]
TINY_VOCAB_SIZE = 512 + len(TINY_MERGES) + 2


def tiny_clip_vocabulary(path: Path) -> Path:
    import gzip

    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("#version: 0.2 (tiny, for tests)\n" + "\n".join(TINY_MERGES) + "\n")
    return path


class BagOfTokens(nn.Module):
    """A stand-in for MobileCLIP's TorchScript text encoder: tokens in, unit-length embeddings out."""

    def __init__(self, width: int = 512):
        super().__init__()
        self.embedding = nn.Embedding(TINY_VOCAB_SIZE, width)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        weights = (tokens > 0).float().unsqueeze(-1)
        pooled = (self.embedding(tokens) * weights).sum(1) / weights.sum(1)
        return torch.nn.functional.normalize(pooled, dim=-1)


def tiny_torchscript_text_encoder(path: Path, width: int = 512, seed: int = 0) -> Path:
    """Traced, as ultralytics' mobileclip_blt.ts is."""
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(BagOfTokens(width).eval(), torch.ones(2, 77, dtype=torch.long)).save(str(path))
    return path


def tiny_clip_checkpoint(path: Path, seed: int = 0) -> Path:
    """A CLIP-shaped checkpoint as OpenAI publishes one (a traced TorchScript archive): a text tower of
    width 64 with YOLO-World's 512-value embeddings."""
    from ums.autolabel.open_vocab import ClipTextTower

    torch.manual_seed(seed)
    tower = ClipTextTower(TINY_VOCAB_SIZE, 77, 64, 1, 512)
    with torch.no_grad():
        for parameter in tower.parameters():
            parameter.normal_(0, 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(tower.eval(), torch.ones(2, 77, dtype=torch.long)).save(str(path))
    return path


def tiny_ultralytics_model(path: Path, yaml: str) -> Path:
    """A randomly initialised ultralytics model from the package's own YAML (e.g. yoloe-11n-seg.yaml)."""
    from ums.core.offline import configure_ultralytics

    configure_ultralytics()
    from ultralytics import YOLO

    torch.manual_seed(0)
    YOLO(yaml).save(str(path))
    return path
