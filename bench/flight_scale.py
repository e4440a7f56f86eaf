"""Whether align should give every frame its flight's scale: end to end against the truth.

    python bench/flight_scale.py [--captures 16] [--json]

Synthetic M30T flights (`ums synth-flight`) built from aligned IR/visible pairs of public datasets
the registration was never tuned on (--pairs; MSRS, RoadScene, TNO, LLVIP where ../shared/data has
them) and from procedural scenes, each under two rigs (the default rotation, and a stronger one with
a displaced optical centre), go through ingest -> crop -> align. For every frame, the mean distance
on a 64x80 grid between where align puts each thermal pixel in the W frame and where
groundtruth.json says it is (thermal px), for:

- ``euclidean``: ECC Euclidean (no scale);
- ``own scale``: ECC similarity, each frame its own scale;
- ``flight scale``: ECC similarity, each frame given the median scale of the flight's confident frames;
- ``align``: what `ums align` decides with its defaults (the flight scale only where it is significant).

The truth's residual scale after crop is 1 (crop's geometry is exact on these flights), so a flight
scale is only noise here; a rig whose intrinsics are off would have a real one, which `align` keeps
when it stands out of its frames' spread.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ums.align.flow import identity_grid  # noqa: E402
from registration import truth_residual  # noqa: E402  (bench/registration.py)

from ums.align.stage import (AlignConfig, _confident, align_workspace, flight_offsets, scale_spread,  # noqa: E402
                             with_scale)
from ums.core.executors import ExecutorSettings  # noqa: E402
from ums.core.records import AlignEstimate  # noqa: E402
from ums.core.workspace import Workspace  # noqa: E402
from ums.crop import CropConfig, crop_workspace  # noqa: E402
from ums.ingest import IngestConfig, ingest_flight  # noqa: E402
from ums.synth import SynthFlightConfig, synth_flight  # noqa: E402
from tests.conftest import SHARED_DATA  # noqa: E402

RIGS = {"default rig": {}, "strong rig": {"rig_rotation_deg": (0.6, -0.5, 1.2), "rig_offset_m": (0.03, -0.02, 0.0)}}
PAIR_SETS = {"msrs": "msrs", "roadscene": "roadscene", "tno": "tno", "llvip": "llvip/train"}
VARIANTS = ("euclidean", "own scale", "flight scale", "align")
QUIET = ExecutorSettings(show_progress=False)


def flights(data: Path | None) -> list[tuple[str, Path | None]]:
    found: list[tuple[str, Path | None]] = [("procedural", None)]
    for name, folder in PAIR_SETS.items():
        if data is not None and (data / folder / "ir").is_dir():
            found.append((name, data / folder))
    return found


def measure_flight(scratch: Path, pairs: Path | None, rig: dict, seed: int, captures: int) -> dict:
    truth_path = synth_flight(scratch / "flight", SynthFlightConfig(n=captures, seed=seed, pairs=pairs,
                                                                    show_progress=False, **rig))
    truth = {c["sequence"]: c for c in json.loads(truth_path.read_text())["captures"]}
    grid = identity_grid(512, 640)[::8, ::8].reshape(-1, 2).astype(np.float64)
    residuals: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    with Workspace.open(scratch / "ws") as ws:
        ingest_flight(ws, scratch / "flight", IngestConfig(), QUIET)
        crop_workspace(ws, CropConfig(), QUIET)
        align_workspace(ws, AlignConfig(motion="euclidean"), QUIET)
        for capture in ws.captures():
            results = ws.stage_results(capture.capture_id)
            residuals["euclidean"].append(truth_residual(results, truth[capture.sequence], grid)(results["align"]["transform"]))
        config = AlignConfig()
        report = align_workspace(ws, config, QUIET)
        estimates, frames, sizes = {}, [], {}
        for capture in ws.captures():
            results = ws.stage_results(capture.capture_id)
            estimates[capture.capture_id] = AlignEstimate.model_validate(results["align"]["estimate"])
            frames.append((capture.capture_id, capture.flight_root))
            sizes[capture.capture_id] = tuple(results["crop"]["output_size"])
        always = flight_offsets(frames, estimates, config.model_copy(update={"min_scale_sigmas": 0.0}))
        flight = next(iter(always.values()), None)
        for capture in ws.captures():
            results = ws.stage_results(capture.capture_id)
            residual = truth_residual(results, truth[capture.sequence], grid)
            own = estimates[capture.capture_id].transform
            residuals["own scale"].append(residual(own))
            residuals["flight scale"].append(residual(with_scale(own, flight, sizes[capture.capture_id])))
            residuals["align"].append(residual(results["align"]["transform"]))
    # the frames flight_offsets takes its median from
    scales = [np.hypot(e.transform[0][0], e.transform[1][0]) for e in estimates.values() if _confident(e, config)]
    shutil.rmtree(scratch)
    return {"residuals": residuals, "flight_scale": float(np.hypot(flight[0][0], flight[1][0])) if flight else None,
            "scale_sigma": scale_spread(scales), "offsets": report.offsets}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--captures", type=int, default=16)
    parser.add_argument("--seed", type=int, default=41)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    data = SHARED_DATA if SHARED_DATA.is_dir() else None
    rows, pooled = [], {variant: [] for variant in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="ums-flight-scale-") as scratch:
        for (name, pairs), (rig_name, rig) in [(f, r) for f in flights(data) for r in RIGS.items()]:
            measured = measure_flight(Path(scratch) / f"{name}-{rig_name}".replace(" ", "-"), pairs, rig, args.seed,
                                      args.captures)
            rows.append((name, rig_name, measured))
            for variant in VARIANTS:
                pooled[variant] += measured["residuals"][variant]
            print(f"  {name} / {rig_name}: flight scale {measured['flight_scale']}", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps([{"pairs": n, "rig": r, **m} for n, r, m in rows], indent=1, default=str))
        return
    print(f"\nmedian distance to the truth per frame (thermal px), {args.captures} captures per flight, seed {args.seed}")
    print(f"{'pairs':<11} {'rig':<12} {'flight scale':>13} {'1 sigma':>8} " + " ".join(f"{v:>12}" for v in VARIANTS))
    for name, rig_name, measured in rows:
        medians = " ".join(f"{statistics.median(measured['residuals'][v]):12.3f}" for v in VARIANTS)
        scale = measured["flight_scale"]
        print(f"{name:<11} {rig_name:<12} {scale if scale is None else f'{scale:.5f}':>13} "
              f"{measured['scale_sigma']:8.5f} {medians}")
    print(f"{'all frames':<11} {'median':<12} {'':>13} {'':>8} "
          + " ".join(f"{statistics.median(pooled[v]):12.3f}" for v in VARIANTS))
    print(f"{'all frames':<11} {'mean':<12} {'':>13} {'':>8} " + " ".join(f"{np.mean(pooled[v]):12.3f}" for v in VARIANTS))


if __name__ == "__main__":
    main()
