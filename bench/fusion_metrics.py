"""The metric table of the classical fusion baselines on every aligned dataset in ../shared/data.

    python bench/fusion_metrics.py [--data ../shared/data] [--limit N] [--convention tsjnet|cddfuse]

For each dataset, each baseline (mean, max, Laplacian pyramid) fuses every pair (luma with IR, as
``tsjnet fuse --grey``) and ``tsjnet eval`` scores it; a TSJNet row is added with --weights. The
table prints the means; the last column is each row's SSIM relative to the mean-fusion row.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tsjnet.evaluate import METRICS, evaluate_folders  # noqa: E402
from tsjnet.fuse import FuseConfig, fuse_folders  # noqa: E402

DATASETS = {"msrs": "msrs", "roadscene": "roadscene", "tno": "tno", "m3fd": "m3fd", "llvip": "llvip/train"}


def limited_copy(source: Path, target: Path, limit: int) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(p for p in source.iterdir() if p.is_file())[:limit]:
        (target / path.name).symlink_to(path.resolve())
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--limit", type=int, default=20, help="pairs per dataset")
    parser.add_argument("--convention", default="tsjnet")
    parser.add_argument("--weights", type=Path, help="also score TSJNet with these weights")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    methods = ["mean", "max", "laplacian"] + (["tsjnet"] if args.weights else [])
    names = tuple(METRICS)
    with tempfile.TemporaryDirectory() as scratch:
        for dataset, folder in DATASETS.items():
            root = args.data / folder
            if not (root / "ir").is_dir():
                print(f"\n{dataset}: absent under {args.data}, skipped")
                continue
            ir = limited_copy(root / "ir", Path(scratch, dataset, "ir"), args.limit)
            vi = limited_copy(root / "vi", Path(scratch, dataset, "vi"), args.limit)
            rows = {}
            for method in methods:
                out = Path(scratch, dataset, method)
                report = fuse_folders(ir, vi, out, FuseConfig(method=method, weights=args.weights, device=args.device,
                                                               grey=True, show_progress=False))
                result = evaluate_folders(ir, vi, out, args.convention, names, show_progress=False)
                rows[method] = (result["mean"], len(result["per_image"]), len(report.problems))
            print_table(dataset, rows, names)


def print_table(dataset: str, rows: dict, names: tuple[str, ...]) -> None:
    count = next(iter(rows.values()))[1]
    print(f"\n### {dataset} ({count} pairs)\n")
    print("| method | " + " | ".join(names) + " | SSIM vs mean |")
    print("| --- |" + " ---: |" * (len(names) + 1))
    reference = rows["mean"][0]["SSIM"]
    for method, (means, _, _) in rows.items():
        cells = " | ".join(format_value(name, means[name]) for name in names)
        print(f"| {method} | {cells} | {means['SSIM'] / reference:.2f}x |")


def format_value(name: str, value: float) -> str:
    return f"{value:.1f}" if name in ("MSE", "CV") else f"{value:.3f}"


if __name__ == "__main__":
    main()
