"""ECC registration's speed: the current implementation against an older one, in the same run.

    python bench/ecc_speed.py [--baseline REV] [--captures 24] [--pairs-per-set 4] [--repeat 3]
                              [--stage-repeat 3]

The old ``ums/align/ecc.py`` and ``ums/align/flow.py`` are read from git at --baseline (default: the
last commit before ECC's rewrite for speed) and imported beside the current ones, so that both run
on the same pairs in one process. Pairs: what `ums align` registers (``estimate_frame``'s inputs:
the cropped thermal, the cropped visible and crop's valid.png) for a `ums synth-flight` of
--captures captures taken through ingest and crop, and the first --pairs-per-set pairs of MSRS,
RoadScene and LLVIP (../shared/data, when present), each visible image warped once by a drone-like
similarity map (<= 20 px, <= 2 deg, <= 3 %) with its coverage as the mask. OpenCV and BLAS run on
one thread. Old and new take turns, the order alternating, so that the slow spells of a shared
machine fall on both alike; ratios are medians of per-item ratios.

1. ``ecc_register`` (similarity, 3 levels, the stage's call) per pair, --repeat times each: ms, the
   median over pairs of each pair's median; new/old; how far apart the two put the frame's corners
   and centre (px: median and largest over pairs); the two ECC correlations (medians). Accuracy
   itself is bench/registration.py's (--baseline there runs the old ECC beside the new).
2. The parts of a frame on the synth-flight pairs: the two gradient maps, the flow of the transform,
   ``estimate_frame``'s work (read the crop, register), and the stage's rendering
   (``render_outputs``): the checkerboard overlay against a proposed one (with a check that the
   images are the same), the aligned visible's PNG against two other encodings, the overlay's JPEG
   at two qualities. Rendering is not ECC's: those rows are for the stage's owners.
3. ``ums align`` with one worker on the cropped flight, ms per capture, each run on a fresh copy of
   the cropped workspace, --stage-repeat turns: with the old ECC, with the new, and with the new and
   the proposed overlay (the stage's ``overlay`` replaced for the run).
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ums.align import ecc, flow, registration  # noqa: E402
from ums.align.deformation import DRONE, random_field  # noqa: E402
from ums.core.atomic import FAST_PNG, RUNS_PNG, UNCOMPRESSED_TIFF  # noqa: E402

# ECC as it stood before its rewrite for speed (a remap per iteration, pinv, no control of the step)
DEFAULT_BASELINE = "d391edf"
SHARED = ROOT.parent / "shared" / "data"
PUBLIC_SETS = ("msrs", "roadscene", "llvip/train")
Pair = tuple[np.ndarray, np.ndarray, np.ndarray]  # thermal (grey), visible (BGR), the visible's valid mask


def module_at(revision: str, path: str) -> types.ModuleType:
    """``path`` as it was at ``revision``, imported under a name of its own."""
    source = subprocess.run(["git", "show", f"{revision}:{path}"], cwd=ROOT, check=True, capture_output=True,
                            text=True).stdout
    module = types.ModuleType(f"baseline_{revision}_{Path(path).stem}")
    module.__file__ = f"{revision}:{path}"
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, module.__file__, "exec"), module.__dict__)  # noqa: S102 (our own file at a revision)
    return module


def cropped_flight(captures: int) -> Path:
    """A workspace holding a synthetic flight of ``captures`` captures, ingested and cropped."""
    from ums.core.executors import ExecutorSettings
    from ums.crop import CropConfig, crop_workspace
    from ums.ingest import IngestConfig, ingest_flight
    from ums.synth import SynthFlightConfig, synth_flight
    from ums.core.workspace import Workspace

    out = Path(tempfile.mkdtemp(prefix="ums-ecc-speed-"))
    synth_flight(out / "flight", SynthFlightConfig(n=captures, seed=5, show_progress=False))
    with Workspace.open(out / "ws") as ws:
        in_process = ExecutorSettings(show_progress=False, workers=1)
        ingest_flight(ws, out / "flight", IngestConfig(), in_process)
        crop_workspace(ws, CropConfig(), in_process)
    return out / "ws"


def crop_files(root: Path) -> list[dict[str, Path]]:
    """crop's files (ir, vis, valid) of every capture."""
    from ums.core.workspace import Workspace

    with Workspace.open(root) as ws:
        return [{key: ws.absolute(path) for key, path in ws.stage_results(capture.capture_id)["crop"]["files"].items()}
                for capture in ws.captures()]


def read_crop(files: dict[str, Path]) -> Pair:
    """As ``estimate_frame`` reads them."""
    return (cv2.imread(str(files["ir"]), cv2.IMREAD_GRAYSCALE), cv2.imread(str(files["vis"]), cv2.IMREAD_COLOR),
            cv2.imread(str(files["valid"]), cv2.IMREAD_GRAYSCALE))


def public_pairs(dataset: str, limit: int, seed: int = 0) -> list[Pair]:
    """The first ``limit`` pairs of a public set, each visible image warped by a drone-like
    similarity map, with its coverage as the mask (as crop's valid.png)."""
    root = SHARED / dataset
    rng = np.random.default_rng(seed)
    pairs = []
    for ir_path in sorted((root / "ir").iterdir())[:limit]:
        vi_path = next((root / "vi").glob(ir_path.stem + ".*"))
        ir = cv2.imread(str(ir_path), cv2.IMREAD_GRAYSCALE)
        vi = cv2.imread(str(vi_path), cv2.IMREAD_COLOR)
        if ir.shape[0] > 600:  # LLVIP 1280x1024: the 640x512 thermal grid
            ir, vi = (cv2.resize(image, (640, 512), interpolation=cv2.INTER_AREA) for image in (ir, vi))
        field = random_field(ir.shape, rng, replace(DRONE, elastic_px=0.0))
        coverage = flow.warp_with_flow(np.full(ir.shape, 255, np.uint8), field)
        pairs.append((ir, flow.warp_with_flow(vi, field), coverage))
    return pairs


def taking_turns(runs: list[Callable[[], object]], repeat: int, first: int) -> list[list[float]]:
    """Seconds of ``repeat`` calls of each run, the order rotating from one turn to the next."""
    times: list[list[float]] = [[] for _ in runs]
    for turn in range(repeat):
        for which in np.roll(np.arange(len(runs)), -(first + turn)):
            start = time.perf_counter()
            runs[which]()
            times[which].append(time.perf_counter() - start)
    return times


def corner_gap(transform_a: np.ndarray, transform_b: np.ndarray, shape: tuple[int, int]) -> float:
    """The largest distance between where two 2x3 transforms put the frame's corners and centre (px)."""
    h, w = shape
    points = np.array([[0, w - 1, 0, w - 1, (w - 1) / 2], [0, 0, h - 1, h - 1, (h - 1) / 2], [1, 1, 1, 1, 1]], float)
    return float(np.linalg.norm((transform_a.astype(float) - transform_b.astype(float)) @ points, axis=0).max())


def ecc_row(name: str, pairs: list[Pair], old_ecc: types.ModuleType, repeat: int) -> str:
    old_ms, new_ms, ratios, gaps, old_scores, new_scores = [], [], [], [], [], []
    for index, (fixed, moving, valid) in enumerate(pairs):
        results = {}

        def run(module, key):
            return lambda: results.__setitem__(key, module.ecc_register(fixed, moving, "similarity", 3,
                                                                          moving_mask=valid))

        old_t, new_t = taking_turns([run(old_ecc, "old"), run(ecc, "new")], repeat, index)
        old_ms.append(statistics.median(old_t) * 1000)
        new_ms.append(statistics.median(new_t) * 1000)
        ratios.append(new_ms[-1] / old_ms[-1])
        gaps.append(corner_gap(results["old"][0], results["new"][0], fixed.shape))
        old_scores.append(results["old"][1])
        new_scores.append(results["new"][1])
    return (f"{name:<24} {len(pairs):5d} {statistics.median(old_ms):8.1f} {statistics.median(new_ms):8.1f} "
            f"{statistics.median(ratios):8.2f} {statistics.median(gaps):8.3f} {max(gaps):8.3f} "
            f"{statistics.median(old_scores):7.4f} {statistics.median(new_scores):7.4f}")


def part_row(name: str, old: Callable[[int], object], new: Callable[[int], object], count: int, repeat: int,
             check: str = "") -> str:
    """ms per frame of two ways of doing one part, taking turns frame by frame."""
    old_ms, new_ms, ratios = [], [], []
    for index in range(count):
        old_t, new_t = taking_turns([lambda: old(index), lambda: new(index)], repeat, index)
        old_ms.append(statistics.median(old_t) * 1000)
        new_ms.append(statistics.median(new_t) * 1000)
        ratios.append(new_ms[-1] / old_ms[-1])
    return (f"{name:<48} {statistics.median(old_ms):8.2f} {statistics.median(new_ms):8.2f} "
            f"{statistics.median(ratios):8.2f}  {check}")


def checkerboard_overlay(thermal: np.ndarray, visible: np.ndarray, tile: int = 64) -> np.ndarray:
    """The stage's checkerboard overlay, proposed: the tiles' parity from one row and one column (no
    per-pixel index arrays or integer divisions), the thermal copied onto the visible through it."""
    h, w = thermal.shape[:2]
    parity = ((np.arange(h) // tile) % 2).astype(np.uint8)[:, None] ^ ((np.arange(w) // tile) % 2).astype(np.uint8)
    out = visible.copy()
    cv2.copyTo(cv2.cvtColor(thermal, cv2.COLOR_GRAY2BGR), parity, out)
    return out


def encoded_kb(images: list[np.ndarray], suffix: str, params: list[int]) -> float:
    return float(np.median([cv2.imencode(suffix, image, params)[1].size for image in images])) / 1024


def parts_rows(crops: list[dict[str, Path]], old_ecc: types.ModuleType, old_flow: types.ModuleType,
               repeat: int) -> list[str]:
    from ums.align.stage import overlay

    pairs = [read_crop(files) for files in crops]
    count = len(pairs)
    rows = []
    same = all(np.array_equal(old_ecc.gradient_representation(image), ecc.gradient_representation(image))
               for pair in pairs for image in pair[:2])
    rows.append(part_row("gradient maps (thermal + visible)",
                         lambda i: [old_ecc.gradient_representation(image) for image in pairs[i][:2]],
                         lambda i: [ecc.gradient_representation(image) for image in pairs[i][:2]], count, repeat,
                         "identical bits" if same else "BITS DIFFER"))
    transforms = [registration.register(fixed, moving, moving_mask=valid).transform for fixed, moving, valid in pairs]
    gap = max(float(np.abs(old_flow.flow_from_transform(t, 512, 640) - flow.flow_from_transform(t, 512, 640)).max())
              for t in transforms)
    rows.append(part_row("flow of the transform (640x512)", lambda i: old_flow.flow_from_transform(transforms[i], 512, 640),
                         lambda i: flow.flow_from_transform(transforms[i], 512, 640), count, repeat,
                         f"largest difference {gap:.1e} px"))

    def estimate(module_ecc, module_flow):
        def run(i):
            fixed, moving, valid = read_crop(crops[i])
            transform, _, _ = module_ecc.ecc_register(fixed, moving, "similarity", 3, moving_mask=valid)
            return module_flow.flow_from_transform(np.vstack([transform, [0, 0, 1]]), *fixed.shape)
        return run

    rows.append(part_row("estimate_frame: read the crop, register", estimate(old_ecc, old_flow), estimate(ecc, flow),
                         count, repeat))
    aligned = [cv2.warpAffine(moving, t[:2], fixed.shape[::-1], flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
               for (fixed, moving, _), t in zip(pairs, transforms)]
    same = all(np.array_equal(overlay(pairs[i][0], aligned[i]), checkerboard_overlay(pairs[i][0], aligned[i]))
               for i in range(count))
    rows.append(part_row("render: checkerboard overlay, stage -> proposed", lambda i: overlay(pairs[i][0], aligned[i]),
                         lambda i: checkerboard_overlay(pairs[i][0], aligned[i]), count, repeat,
                         "identical images" if same else "IMAGES DIFFER"))
    fast = encoded_kb(aligned, ".png", FAST_PNG)
    for label, suffix, params in (("RUNS_PNG", ".png", RUNS_PNG), ("uncompressed TIFF", ".tif", UNCOMPRESSED_TIFF)):
        rows.append(part_row(f"render: aligned vis, FAST_PNG -> {label}", lambda i: cv2.imencode(".png", aligned[i], FAST_PNG),
                             lambda i, s=suffix, p=params: cv2.imencode(s, aligned[i], p), count, repeat,
                             f"{fast:.0f} KB -> {encoded_kb(aligned, suffix, params):.0f} KB"))
    boards = [overlay(pairs[i][0], aligned[i]) for i in range(count)]
    quality = [cv2.IMWRITE_JPEG_QUALITY, 85]
    rows.append(part_row("render: overlay.jpg, quality 95 -> 85", lambda i: cv2.imencode(".jpg", boards[i]),
                         lambda i: cv2.imencode(".jpg", boards[i], quality), count, repeat,
                         f"{encoded_kb(boards, '.jpg', []):.0f} KB -> {encoded_kb(boards, '.jpg', quality):.0f} KB"))
    return rows


def stage_rows(root: Path, captures: int, old_ecc: types.ModuleType, repeat: int) -> list[str]:
    """ms per capture of `ums align` (one worker) on fresh copies of the cropped workspace."""
    from ums.align import stage
    from ums.core.executors import ExecutorSettings
    from ums.core.workspace import Workspace

    current = (registration.ecc_register, stage.overlay)

    def proposed_overlay(thermal: np.ndarray, visible: np.ndarray, style: str = "checkerboard", tile: int = 64):
        if style == "checkerboard":
            return checkerboard_overlay(thermal, visible, tile)
        return current[1](thermal, visible, style, tile)

    variants = {"old ECC": (old_ecc.ecc_register, stage.overlay), "new ECC": (ecc.ecc_register, stage.overlay),
                "new ECC + proposed overlay": (ecc.ecc_register, proposed_overlay)}

    def align_with(name: str) -> Callable[[], None]:
        def run() -> None:
            copy = root.parent / f"align-{len(names[name])}-{name.replace(' ', '-')}"
            shutil.copytree(root, copy)
            registration.ecc_register, stage.overlay = variants[name]
            try:
                with Workspace.open(copy) as ws:
                    start = time.perf_counter()
                    stage.align_workspace(ws, stage.AlignConfig(), ExecutorSettings(workers=1, show_progress=False))
                    names[name].append((time.perf_counter() - start) / captures * 1000)
            finally:
                registration.ecc_register, stage.overlay = current
                shutil.rmtree(copy)
        return run

    names: dict[str, list[float]] = {name: [] for name in variants}
    taking_turns([align_with(name) for name in variants], repeat, 0)  # copying stays outside the clock
    baseline = names["old ECC"]
    return [f"{name:<30} {statistics.median(times):8.1f} "
            f"{statistics.median([t / b for t, b in zip(times, baseline)]):8.2f}" for name, times in names.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="the git revision of the old ECC")
    parser.add_argument("--captures", type=int, default=24)
    parser.add_argument("--pairs-per-set", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--stage-repeat", type=int, default=3)
    args = parser.parse_args()
    from ums.core.executors import pin_threads

    pin_threads()
    old_ecc = module_at(args.baseline, "ums/align/ecc.py")
    old_flow = module_at(args.baseline, "ums/align/flow.py")
    root = cropped_flight(args.captures)
    crops = crop_files(root)
    sets = [("synth-flight crops", [read_crop(files) for files in crops])]
    if SHARED.is_dir():
        sets += [(f"{name.split('/')[0]}, warped", public_pairs(name, args.pairs_per_set)) for name in PUBLIC_SETS]
    print(f"machine: {platform.processor() or platform.machine()}, OpenCV {cv2.__version__}, numpy {np.__version__}, "
          f"one thread; old: {args.baseline}, new: the working tree")
    print(f"\nECC similarity per pair (ecc_register, 3 levels, valid mask), {args.repeat} turns each")
    print(f"{'pairs':<24} {'n':>5} {'old ms':>8} {'new ms':>8} {'new/old':>8} {'gap px':>8} {'max px':>8} "
          f"{'old cor':>7} {'new cor':>7}")
    for name, pairs in sets:
        print(ecc_row(name, pairs, old_ecc, args.repeat), flush=True)
    print(f"\nparts of a frame, synth-flight ({len(crops)} frames), ms per frame, {args.repeat} turns each")
    print(f"{'part (old -> new)':<48} {'old ms':>8} {'new ms':>8} {'new/old':>8}  check")
    for row in parts_rows(crops, old_ecc, old_flow, args.repeat):
        print(row, flush=True)
    print(f"\nums align, one worker, synth-flight ({len(crops)} captures), ms per capture, {args.stage_repeat} turns each")
    print(f"{'run':<30} {'ms':>8} {'/old':>8}")
    for row in stage_rows(root, len(crops), old_ecc, args.stage_repeat):
        print(row, flush=True)


if __name__ == "__main__":
    main()
