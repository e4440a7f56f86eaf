"""GPU check of neighborhood attention: natten's fused CUDA na2d against our gather path.

    python bench/gpu_check_na.py [--sizes 120x160,60x80,30x40,15x20] [--repeat 20]

For each TSJNet level (heads x head_dim 32, kernel 7) and dtype (fp32, bf16): the largest absolute
difference between the two paths' outputs and gradients, and ms per call of each (CUDA events).
Prints the GPU's name; run on a lent GPU machine, results go to bench/RESULTS.md with that name.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tsjnet.layers.neighborhood_attention import neighborhood_attention_2d  # noqa: E402

LEVEL_HEADS = {(120, 160): 2, (60, 80): 4, (30, 40): 8, (15, 20): 16}


def cuda_ms(run, repeat: int) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    run()
    torch.cuda.synchronize()
    start.record()
    for _ in range(repeat):
        run()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="120x160,60x80,30x40,15x20")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA device: this check needs a GPU")
    import natten

    print(f"GPU: {torch.cuda.get_device_name(0)}; torch {torch.__version__}; natten {natten.__version__}")
    print(f"{'level':>9} {'heads':>5} {'dtype':>8} {'max |out diff|':>15} {'max |grad diff|':>16} {'natten ms':>10} {'gather ms':>10}")
    for size in args.sizes.split(","):
        height, width = (int(v) for v in size.split("x"))
        heads = LEVEL_HEADS.get((height, width), 4)
        for dtype in (torch.float32, torch.bfloat16):
            torch.manual_seed(0)
            tensors = [torch.randn(2, height, width, heads, 32, device="cuda", dtype=dtype, requires_grad=True)
                       for _ in range(3)]
            fused = natten.na2d(*tensors, kernel_size=7)
            ours = neighborhood_attention_2d(*tensors, kernel_size=7)
            upstream = torch.randn_like(fused)
            fused_grads = torch.autograd.grad((fused * upstream).sum(), tensors)
            ours_grads = torch.autograd.grad((ours * upstream).sum(), tensors)
            out_diff = (fused - ours).abs().max().item()
            grad_diff = max((a - b).abs().max().item() for a, b in zip(fused_grads, ours_grads))
            with torch.no_grad():
                natten_ms = cuda_ms(lambda: natten.na2d(*tensors, kernel_size=7), args.repeat)
                gather_ms = cuda_ms(lambda: neighborhood_attention_2d(*tensors, kernel_size=7), args.repeat)
            print(f"{size:>9} {heads:5d} {str(dtype)[6:]:>8} {out_diff:15.2e} {grad_diff:16.2e} {natten_ms:10.3f} {gather_ms:10.3f}")


if __name__ == "__main__":
    main()
