"""``tsjnet summary``: parameter and MAC counts of a configuration, measured on the meta device
(no memory, no compute) with PyTorch's FlopCounterMode (MACs = FLOPs / 2)."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from tsjnet.model import TSJNet, TSJNetConfig, count_parameters


def count_macs(model: TSJNet, height: int, width: int) -> int:
    image = torch.empty(1, 1, height, width, device="meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(image, image)
    return counter.get_total_flops() // 2


def summarize(config: TSJNetConfig | None = None, height: int = 480, width: int = 640) -> dict:
    config = config or TSJNetConfig()
    with torch.device("meta"):
        model = TSJNet(config).eval()
    parts = {name: count_parameters(module) for name, module in model.named_children()}
    summary = {"params": count_parameters(model), "params_by_part": parts,
               "macs_480x640": count_macs(model, 480, 640)}
    if (height, width) != (480, 640):
        summary[f"macs_{height}x{width}"] = count_macs(model, height, width)
    summary["config"] = config.model_dump(mode="json")
    return summary
