"""Fusion speed: ms per pair at 480 x 640 for TSJNet (random weights; speed does not depend on them).

    python bench/fuse.py [--repeat 3] [--cpu-repeat 1] [--batch 1]

Rows: the Laplacian-pyramid baseline (CPU) for scale; TSJNet fp32 on CPU (pure-PyTorch
neighborhood attention); on a GPU when present, fp32 with the PyTorch attention, fp32 and bf16
with natten's fused kernels. Ratios are against the CPU TSJNet row of the same run. MACs come from
FlopCounterMode on the meta device.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timing import median_seconds  # noqa: E402  (bench/timing.py)
from tsjnet.baselines import fuse_laplacian  # noqa: E402
from tsjnet.layers import neighborhood_attention  # noqa: E402
from tsjnet.model import TSJNet  # noqa: E402
from tsjnet.summary import count_macs  # noqa: E402

HEIGHT, WIDTH = 480, 640


def time_network(model: TSJNet, device: str, dtype, repeat: int, batch: int, natten: bool) -> float:
    ir = torch.rand(batch, 1, HEIGHT, WIDTH, device=device)
    vi = torch.rand(batch, 1, HEIGHT, WIDTH, device=device)
    original = neighborhood_attention._natten_can_run
    if not natten:
        neighborhood_attention._natten_can_run = lambda *args: False

    def run():
        with torch.no_grad(), torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None):
            model(ir, vi)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    try:
        run()  # warm-up: kernels, allocator
        return median_seconds(run, repeat) / batch
    finally:
        neighborhood_attention._natten_can_run = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="timed GPU runs")
    parser.add_argument("--cpu-repeat", type=int, default=1, help="timed CPU runs (each takes about a minute)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--skip-cpu", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = TSJNet().eval()
    with torch.device("meta"):
        macs = count_macs(TSJNet().eval(), HEIGHT, WIDTH)
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}" + (f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""))
    print(f"TSJNet at {HEIGHT}x{WIDTH}: {macs / 1e9:,.1f} G MACs per pair; batch {args.batch}\n")
    rows = []
    image = np.random.default_rng(0).uniform(0, 255, (HEIGHT, WIDTH)).astype(np.float32)
    rows.append(("Laplacian pyramid baseline, CPU", median_seconds(lambda: fuse_laplacian(image, image), 5)))
    if not args.skip_cpu:
        rows.append(("TSJNet fp32, CPU, PyTorch attention",
                     time_network(model, "cpu", None, args.cpu_repeat, args.batch, natten=False)))
    if torch.cuda.is_available():
        model = model.cuda()
        for dtype, label in ((None, "fp32"), (torch.bfloat16, "bf16")):
            rows.append((f"TSJNet {label}, GPU, PyTorch attention",
                         time_network(model, "cuda", dtype, args.repeat, args.batch, natten=False)))
            if neighborhood_attention.natten_has_kernels():
                rows.append((f"TSJNet {label}, GPU, natten",
                             time_network(model, "cuda", dtype, args.repeat, args.batch, natten=True)))
        if not neighborhood_attention.natten_has_kernels():
            print("natten has no compiled kernels here (libnatten): the GPU rows use the PyTorch attention only")
    reference = next((seconds for name, seconds in rows if name.startswith("TSJNet")), rows[0][1])
    print("| row | ms per pair | TMAC/s | vs first TSJNet row |")
    print("| --- | ---: | ---: | ---: |")
    for name, seconds in rows:
        throughput = f"{macs / seconds / 1e12:.2f}" if name.startswith("TSJNet") else "-"
        print(f"| {name} | {seconds * 1000:,.1f} | {throughput} | {reference / seconds:.2f}x |")


if __name__ == "__main__":
    main()
