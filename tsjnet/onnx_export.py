"""``tsjnet export-onnx``: the fusion graph (IR, visible luma) -> fused luma at one fixed size.

The pure-PyTorch neighborhood attention is exported (gather + einsum), since natten's kernels have no
ONNX form; the window tables depend on the size, so each size is its own ONNX file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn as nn

from tsjnet.model import TSJNet


class FusedOnly(nn.Module):
    def __init__(self, model: TSJNet):
        super().__init__()
        self.model = model

    def forward(self, infrared: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        return self.model(infrared, visible).fused


def export_onnx(model: TSJNet, path: Path, height: int, width: int, opset: int = 17) -> Path:
    multiple = model.config.size_multiple
    if height % multiple or width % multiple:
        raise ValueError(f"ONNX export needs H and W divisible by {multiple}, got {height}x{width}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(1, 1, height, width)
    temporary = path.with_name(f".{path.name}.partial")
    with warnings.catch_warnings():
        # shapes are constants of the exported size by design; the tracer warns about each of them
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        _export(model, example, temporary, opset)
    temporary.replace(path)
    return path


def _export(model: TSJNet, example: torch.Tensor, temporary: Path, opset: int) -> None:
    torch.onnx.export(FusedOnly(model.cpu().eval()), (example, example), str(temporary), dynamo=False,
                      input_names=["infrared", "visible"], output_names=["fused"], opset_version=opset,
                      dynamic_axes={"infrared": {0: "batch"}, "visible": {0: "batch"}, "fused": {0: "batch"}})
