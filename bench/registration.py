"""Registration accuracy and speed: one table per dataset.

    python bench/registration.py [--pairs-per-set 12] [--fields 2] [--flight-captures 12]
                                 [--learned | --weights CKPT] [--only floor-free] [--control] [--tiles]
                                 [--motions similarity ...] [--baseline REV]

--motions keeps only these ECC rows (and align runs). --baseline adds, after each ECC row, the same
motion with ``ums/align/ecc.py`` as it was at the git revision REV, on the same pairs and warps in
the same run (e.g. the ECC before its rewrite for speed, d391edf); in the synth-flight table both
then align in this process (one worker), the baseline's on a copy of the cropped workspace.

Floor-free tables (first): each benchmark pair (the first --pairs-per-set of MSRS,
RoadScene, LLVIP: pairs no training here ever saw) has its visible image warped twice by known
maps M1, M2 (drone-like similarity: <= 20 px, <= 2 deg, <= 3 %; then the same plus a smooth elastic
part, sigma 30-80 px, RMS 1-2 px) and registered each time. For a fixed pixel x and flow f_k the
visible pixel chosen is M_k(x + f_k(x)); the disagreement of the two choices
(ums.align.flow.disagreement, per-pair mean over the pixels both keep 8 px inside the visible frame)
does not depend on the pair's own misalignment, so it measures the method and not the data.
Every method gets the warped visible image's coverage as its mask, as `ums align` passes crop's
valid.png. Columns: median and p90 over pairs, ms per registration on one core, and the median of
each set. With --control each table is repeated with the thermal image registered onto warps of
itself: the same method and warps with all the structure shared, which separates what the method
cannot do from what the visible images do not show (MSRS and LLVIP are night scenes). --tiles adds
classical local refinement after ECC (bench/tile_matchers.py) as a check of the learned cascade.

Tables (rows: identity, oracle affine (least-squares fit to the truth: the floor of any global
model), ECC translation, Euclidean and similarity, and the learned net with --learned or --weights:
the cascade with a refiner checkpoint from `ums align-train`, or the dense matcher alone with one of
its checkpoints from bench/dense_matcher_train.py, research code in bench/dense_matcher.py):
  superfusion-MSRS / -RoadScene  SuperFusion's released warps with ground-truth grids
  drone-<set>                    seeded drone-like residual warps of aligned pairs: translation
                                 <= 20 px, rotation <= 2 deg, scale <= 3 %, smooth elastic <= 1.5 px
  synth-flight                   `ums synth-flight` -> ingest -> crop -> align vs groundtruth.json
EPE is the per-pair mean end-point error (px) over valid fixed pixels (sample inside, eroded 8 px);
the columns aggregate it over pairs. SR@k: share of pairs under k px. Failures: EPE > 10 px or
the method gave up. ms/pair: one core (cv2.setNumThreads(1)), 640x512 or the data's own size.
The "aligned" public pairs are themselves off by 0.5-5 px; the floor line reports ECC translation
on the unwarped pairs, a lower bound on what any cross-modal EPE here can mean. median*: the median
EPE against the truth composed with each pair's own misalignment (ECC similarity on the unwarped
pair): how well the synthetic warp itself is recovered.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import scipy.io

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ums.align import Registration, RegistrationFailure, register  # noqa: E402
from ums.align.deformation import DRONE, random_field, smooth_field  # noqa: E402
from ums.align.flow import (compose, disagreement, endpoint_error, flow_from_transform,  # noqa: E402
                            grid_sample_to_flow, identity_grid, scoring_mask, valid_mask, warp_with_flow)
from ums.align.registration import DEFAULT_MOTION  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
METHODS = {
    "identity": dict(method="identity"),
    **{f"ECC {motion}{' (default)' if motion == DEFAULT_MOTION else ''}": dict(method="ecc", motion=motion)
       for motion in ("translation", "euclidean", "similarity")},
}


@dataclass
class Row:
    epe: list[float] = field(default_factory=list)
    corrected: list[float] = field(default_factory=list)
    failures: int = 0
    ms: list[float] = field(default_factory=list)

    def add(self, value: float, seconds: float = 0.0, failed: bool = False, corrected: float | None = None) -> None:
        self.epe.append(value)
        if corrected is not None:
            self.corrected.append(corrected)
        self.failures += int(failed or value > 10)
        self.ms.append(seconds * 1000)

    def cells(self) -> str:
        e = np.array(self.epe)
        sr = " ".join(f"{(e < k).mean():4.2f}" for k in (1, 2, 3, 5))
        corrected = f"{np.median(self.corrected):7.2f}" if self.corrected else f"{'-':>7}"
        return (f"{e.mean():7.2f} {np.median(e):7.2f} {np.percentile(e, 90):7.2f}  {sr}  {self.failures:4d} "
                f"{np.mean(self.ms) if self.ms else 0:8.1f} {corrected}")


@dataclass
class Case:
    fixed: np.ndarray
    moving: np.ndarray
    truth: np.ndarray  # pixel flow on the fixed grid
    # the truth composed with the pair's own misalignment (as ECC similarity measures it on the
    # unwarped pair): what a perfect method would find if the "aligned" pair was not aligned
    corrected: np.ndarray | None = None


def oracle_affine(truth: np.ndarray, mask: np.ndarray) -> np.ndarray:
    grid = identity_grid(*truth.shape[:2])[mask].astype(np.float64)
    target = grid + truth[mask]
    design = np.hstack([grid, np.ones((len(grid), 1))])
    solution, *_ = np.linalg.lstsq(design, target, rcond=None)
    return flow_from_transform(np.vstack([solution.T, [0, 0, 1]]), *truth.shape[:2])


def evaluate(cases: list[Case]) -> dict[str, Row]:
    rows = {"identity": Row(), "oracle affine": Row(), **{name: Row() for name in METHODS if name != "identity"}}
    for case in cases:
        mask = scoring_mask(case.truth, case.fixed, case.moving.shape)
        rows["oracle affine"].add(endpoint_error(oracle_affine(case.truth, mask), case.truth, mask))
        for name, options in METHODS.items():
            start = time.perf_counter()
            try:
                flow = run_method(options, case.fixed, case.moving).flow
                failed = False
            except RegistrationFailure:
                flow, failed = np.zeros_like(case.truth), True
            seconds = time.perf_counter() - start
            corrected = None if case.corrected is None else endpoint_error(flow, case.corrected, mask)
            rows[name].add(endpoint_error(flow, case.truth, mask), seconds, failed, corrected)
    return rows


def learned_method(weights: Path | None, device: str):
    """The learned row's name and method: the cascade with the refiner at ``weights`` (the shipped
    one when None), or the dense matcher alone when ``weights`` is one of its checkpoints."""
    from dense_matcher import is_dense_checkpoint, register_dense  # bench/dense_matcher.py

    if weights is not None and is_dense_checkpoint(weights):
        return "dense matcher", lambda fixed, moving, mask: register_dense(fixed, moving, weights, device)
    return "learned", dict(method="learned", weights=weights, device=device)


def run_method(options, fixed: np.ndarray, moving: np.ndarray, moving_mask: np.ndarray | None = None):
    """``options``: register()'s keyword arguments, or a function of (fixed, moving, moving_mask)."""
    if callable(options):
        return options(fixed, moving, moving_mask)
    return register(fixed, moving, moving_mask=moving_mask, **options)


def baseline_ecc(revision: str):
    """``ecc_register`` as it was at the git ``revision`` (bench/ecc_speed.py reads it from git)."""
    from ecc_speed import module_at

    return module_at(revision, "ums/align/ecc.py")


def baseline_method(old_ecc, motion: str):
    """register(method="ecc", motion=motion) with the baseline's ECC: a function of (fixed, moving, mask)."""
    def run(fixed: np.ndarray, moving: np.ndarray, moving_mask: np.ndarray | None) -> Registration:
        try:
            transform, score, converged = old_ecc.ecc_register(fixed, moving, motion, 3, moving_mask=moving_mask)
        except old_ecc.RegistrationFailure as exc:
            raise RegistrationFailure(str(exc)) from exc
        matrix = np.vstack([transform, [0, 0, 1]]).astype(np.float64)
        return Registration(flow_from_transform(matrix, *fixed.shape[:2]), score, matrix, "ecc",
                            {"motion": motion, "converged": converged})
    return run


def with_baseline(methods: dict, revision: str) -> dict:
    """``methods`` with each ECC row followed by the same motion at the baseline ``revision``."""
    old_ecc = baseline_ecc(revision)
    out = {}
    for name, options in methods.items():
        out[name] = options
        if isinstance(options, dict) and options.get("method") == "ecc":
            out[f"ECC {options['motion']} @{revision}"] = baseline_method(old_ecc, options["motion"])
    return out


def print_table(title: str, rows: dict[str, Row], note: str = "") -> None:
    width = max(30, *map(len, rows))
    print(f"\n{title}  ({len(next(iter(rows.values())).epe)} pairs){'  ' + note if note else ''}")
    print(f"{'method':<{width}} {'mean':>7} {'median':>7} {'p90':>7}  {'SR@1 @2   @3   @5':<19}  {'fail':>4} {'ms/pair':>8} "
          f"{'median*':>7}")
    for name, row in rows.items():
        print(f"{name:<{width}} {row.cells()}")


def grey(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


# -- SuperFusion's released warps ------------------------------------------------------------------
def superfusion_cases(dataset: str) -> list[Case]:
    root = SHARED / "registration_superfusion" / dataset
    cases = []
    for mat in sorted((root / "flow").glob("*.mat")):
        name = mat.name[: -len(".mat")]
        vi_dir = root / "vi" if (root / "vi").exists() else SHARED / "msrs" / "vi"
        fixed = cv2.imread(str(root / "ir_warp" / name), cv2.IMREAD_GRAYSCALE)
        moving = cv2.imread(str(vi_dir / name), cv2.IMREAD_COLOR)
        # ir_warp(p) = ir(p + u(p)) and ir ~ vi, so registering vi onto ir_warp must find u itself
        cases.append(Case(fixed, moving, grid_sample_to_flow(scipy.io.loadmat(str(mat))["flow"])))
    return cases


# -- drone-like residual warps of aligned pairs ----------------------------------------------------
BENCH_SETS = ("msrs", "roadscene", "llvip/train")
TRAIN_ONLY_SETS = ("tno", "m3fd")  # never benchmarked here: free for training


def pair_paths(dataset: str) -> list[tuple[Path, Path]]:
    root = SHARED / dataset
    found = ((ir, next((root / "vi").glob(ir.stem + ".*"), None)) for ir in sorted((root / "ir").iterdir()))
    return [(ir, vi) for ir, vi in found if vi is not None]


def read_aligned(ir_path: Path, vi_path: Path) -> tuple[np.ndarray, np.ndarray]:
    ir = grey(cv2.imread(str(ir_path)))
    vi = cv2.imread(str(vi_path), cv2.IMREAD_COLOR)
    if ir.shape[0] > 600:  # LLVIP 1280x1024 -> the 640x512 thermal grid
        ir = cv2.resize(ir, (640, 512), interpolation=cv2.INTER_AREA)
        vi = cv2.resize(vi, (640, 512), interpolation=cv2.INTER_AREA)
    return ir, vi


def aligned_pairs(dataset: str, limit: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The benchmark's pairs of ``dataset``: its first ``limit`` in name order."""
    return [read_aligned(ir, vi) for ir, vi in pair_paths(dataset)[:limit]]


def write_training_split(out: Path, limit: int, every: int = 6, validate_only: tuple[str, ...] = ()) -> None:
    """Pairs this benchmark does not score, for `ums align-train`: out/train and out/val (each
    ``every``-th), at the benchmark's scale, so a trained net never saw the pairs it is scored on.
    Pairs of the sets in ``validate_only`` (e.g. LLVIP, whose licence is non-commercial) are written
    to val only: their train share is left out."""
    rest = ([(d, *p) for d in BENCH_SETS for p in pair_paths(d)[limit:]]
            + [(d, *p) for d in TRAIN_ONLY_SETS for p in pair_paths(d)])
    for index, (dataset, ir_path, vi_path) in enumerate(rest):
        part = out / ("val" if index % every == every - 1 else "train")
        if part.name == "train" and dataset.split("/")[0] in validate_only:
            continue
        ir, vi = read_aligned(ir_path, vi_path)
        name = f"{dataset.split('/')[0]}_{ir_path.stem}.png"
        for folder, image in (("ir", ir), ("vi", vi)):
            (part / folder).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(part / folder / name), image)
    counts = {part: len(list((out / part / "ir").glob("*.png"))) for part in ("train", "val")}
    print(f"wrote {counts['train']} training and {counts['val']} validation pairs under {out} "
          f"(none of the first {limit} of {', '.join(BENCH_SETS)})")


def drone_cases(pairs, fields: int, seed: int) -> list[Case]:
    rng = np.random.default_rng(seed)
    cases = []
    for ir, vi in pairs:
        own = register(ir, vi, motion="similarity").transform  # ir pixel -> vi pixel
        for _ in range(fields):
            truth = random_field(ir.shape, rng, DRONE)
            sample = (identity_grid(*ir.shape) + truth).reshape(-1, 2).astype(np.float64)
            mapped = np.hstack([sample, np.ones((len(sample), 1))]) @ own.T
            corrected = (mapped[:, :2] / mapped[:, 2:]).reshape(truth.shape) - identity_grid(*ir.shape)
            cases.append(Case(warp_with_flow(ir, truth), vi, truth, corrected.astype(np.float32)))
    return cases


# -- floor-free: each pair warped twice ------------------------------------------------------------
SIMILARITY_WARPS = replace(DRONE, elastic_px=0.0)
ELASTIC_SIGMA_PX, ELASTIC_RMS_PX = (30.0, 80.0), (1.0, 2.0)


@dataclass
class TwiceWarped:
    dataset: str
    fixed: np.ndarray
    moving_shape: tuple[int, int]
    warped: list[tuple[np.ndarray, np.ndarray]]  # (moving_k, map_k), k = 1, 2


def twice_warped(pairs: list[tuple[str, np.ndarray, np.ndarray]], elastic: bool, seed: int) -> list[TwiceWarped]:
    """``pairs``: (dataset, thermal, visible)."""
    rng = np.random.default_rng([seed, 14, int(elastic)])
    cases = []
    for dataset, ir, vi in pairs:
        warped = []
        for _ in range(2):
            field_k = random_field(ir.shape, rng, SIMILARITY_WARPS)
            if elastic:
                field_k += smooth_field(ir.shape, rng, rng.uniform(*ELASTIC_SIGMA_PX), rng.uniform(*ELASTIC_RMS_PX))
            warped.append((warp_with_flow(vi, field_k), field_k))
        cases.append(TwiceWarped(dataset, ir, vi.shape[:2], warped))
    return cases


@dataclass
class Consistency:
    per_pair: list[float] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    ms: list[float] = field(default_factory=list)
    failures: int = 0
    refined: int = 0  # the cascade: registrations its refiner changed (the others kept ECC's fit)

    def cells(self) -> str:
        d = np.array(self.per_pair)
        refined = f"{self.refined / len(self.ms):8.0%}" if self.refined else f"{'-':>8}"
        sets = np.array(self.datasets)
        per_set = " ".join(f"{np.median(d[sets == name]):7.2f}" for name in dict.fromkeys(self.datasets))
        return (f"{np.median(d):7.2f} {np.percentile(d, 90):7.2f} {d.mean():7.2f} {self.failures:5d} "
                f"{np.mean(self.ms):8.1f} {refined} {per_set}")


def evaluate_consistency(cases: list[TwiceWarped], methods: dict[str, dict]) -> dict[str, Consistency]:
    rows = {name: Consistency() for name in methods}
    for case in cases:
        for name, options in methods.items():
            flows = []
            for moving, map_k in case.warped:
                # the stage passes crop's valid.png; here the warp's own coverage
                coverage = warp_with_flow(np.full(moving.shape[:2], 255, np.uint8), map_k)
                start = time.perf_counter()
                try:
                    registration = run_method(options, case.fixed, moving, coverage)
                    flows.append(registration.flow)
                    rows[name].refined += registration.details.get("refinement", "").startswith("refined")
                except RegistrationFailure:
                    flows.append(np.zeros(case.fixed.shape[:2] + (2,), np.float32))
                    rows[name].failures += 1
                rows[name].ms.append((time.perf_counter() - start) * 1000)
            (moving_1, map_1), (moving_2, map_2) = case.warped
            inside = np.ones(case.fixed.shape[:2], bool)
            for flow, (moving, map_k) in zip(flows, case.warped):
                inside &= valid_mask(flow, moving.shape, erode_px=8)
                inside &= valid_mask(compose(map_k, flow), case.moving_shape, erode_px=8)
            apart = disagreement(flows[0], map_1, flows[1], map_2)
            rows[name].per_pair.append(float(apart[inside].mean()) if inside.any() else float("nan"))
            rows[name].datasets.append(case.dataset)
    return rows


def print_consistency(title: str, rows: dict[str, Consistency]) -> None:
    first = next(iter(rows.values()))
    sets = " ".join(f"{name.split('/')[0][:7]:>7}" for name in dict.fromkeys(first.datasets))
    print(f"\n{title}  ({len(first.per_pair)} pairs, each registered twice)")
    print(f"{'method':<30} {'median':>7} {'p90':>7} {'mean':>7} {'fail':>5} {'ms/reg':>8} {'refined':>8} {sets}")
    for name, row in rows.items():
        print(f"{name:<30} {row.cells()}")


def floor_free_tables(pairs_per_set: int, seed: int, methods: dict[str, dict], control: bool = False) -> None:
    pairs = [(dataset, *pair) for dataset in BENCH_SETS for pair in aligned_pairs(dataset, pairs_per_set)]
    kinds = [("", pairs)]
    if control:  # the thermal image as its own visible partner: every structure shared
        kinds.append((", control: thermal onto warps of itself",
                      [(dataset, ir, cv2.cvtColor(ir, cv2.COLOR_GRAY2BGR)) for dataset, ir, _ in pairs]))
    for elastic, label in ((False, "similarity warps"), (True, "similarity + elastic warps (RMS 1-2 px)")):
        for suffix, kind in kinds:
            print_consistency(f"floor-free disagreement (px), {label}{suffix}",
                              evaluate_consistency(twice_warped(kind, elastic, seed), methods))


def floor_of(pairs) -> float:
    shifts = [np.hypot(*register(ir, vi, motion="translation").translation) for ir, vi in pairs]
    return float(np.median(shifts))


# -- end to end on a synthetic flight --------------------------------------------------------------
def synth_flight_rows(captures: int, motions: tuple[str, ...] = ("translation", "euclidean", "similarity"),
                      baseline: str | None = None) -> dict[str, Row]:
    import shutil

    from ums.align import registration
    from ums.align.stage import AlignConfig, align_workspace
    from ums.core.executors import ExecutorSettings
    from ums.crop import CropConfig, crop_workspace
    from ums.ingest import IngestConfig, ingest_flight
    from ums.synth import SynthFlightConfig, synth_flight
    from ums.core.workspace import Workspace

    out = Path(tempfile.mkdtemp(prefix="ums-reg-bench-"))
    truth_path = synth_flight(out / "flight", SynthFlightConfig(n=captures, seed=5, show_progress=False))
    truth = {c["sequence"]: c for c in json.loads(truth_path.read_text())["captures"]}
    grid = identity_grid(512, 640)[::8, ::8].reshape(-1, 2).astype(np.float64)
    rows = {"crop only": Row()}
    # with a baseline both align in this process, where the baseline's ECC can stand in for ours
    workers = {} if baseline is None else {"workers": 1}
    with Workspace.open(out / "ws") as ws:
        ingest_flight(ws, out / "flight", IngestConfig(), ExecutorSettings(show_progress=False))
        start = time.perf_counter()
        crop_workspace(ws, CropConfig(), ExecutorSettings(show_progress=False))
        crop_ms = (time.perf_counter() - start) / captures
    if baseline is not None:
        shutil.copytree(out / "ws", out / "ws-baseline")
    runs = [(motion, "", out / "ws") for motion in motions]
    if baseline is not None:
        runs = [run for motion in motions for run in ((motion, "", out / "ws"), (motion, f" @{baseline}", out / "ws-baseline"))]
    current = registration.ecc_register
    old = baseline_ecc(baseline).ecc_register if baseline is not None else None
    for motion, label, root in runs:
        registration.ecc_register = old if label else current
        try:
            with Workspace.open(root) as ws:
                start = time.perf_counter()
                report = align_workspace(ws, AlignConfig(motion=motion), ExecutorSettings(show_progress=False, **workers))
                seconds = (time.perf_counter() - start) / captures
                add_flight_rows(rows, ws, report.offsets[str((out / "flight").resolve())], truth, grid,
                                f"{motion}{label}", seconds, crop_ms if motion == motions[0] and not label else None)
        finally:
            registration.ecc_register = current
    return rows


def truth_residual(results: dict, truth_capture: dict, grid: np.ndarray) -> Callable[[Any], float]:
    """For one capture's stage results: the mean distance (output px, over ``grid``) between where an
    align transform puts the grid in the W frame and where groundtruth.json's ``thermal_to_wide`` does."""
    from ums.camera import apply_homography

    crop_map = np.array(results["crop"]["thermal_to_visible"]) @ np.array(results["crop"]["output_to_thermal"])
    back = np.linalg.inv(crop_map)
    expected = apply_homography(back, apply_homography(np.array(truth_capture["thermal_to_wide"]), grid))

    def residual(transform) -> float:
        ours = apply_homography(back, apply_homography(crop_map @ np.asarray(transform), grid))
        return float(np.linalg.norm(ours - expected, axis=1).mean())

    return residual


def add_flight_rows(rows: dict[str, Row], ws, offset, truth: dict, grid: np.ndarray, name: str, seconds: float,
                    crop_ms: float | None) -> None:
    """The rows of one align run: each frame's and the flight offset's residual against the truth
    (and crop's alone, given ``crop_ms``)."""
    rows[f"+ align {name}"] = row = Row()
    rows[f"  flight offset ({name})"] = offset_row = Row()
    for capture in ws.captures():
        results = ws.stage_results(capture.capture_id)
        residual = truth_residual(results, truth[capture.sequence], grid)
        row.add(residual(results["align"]["transform"]), seconds)
        offset_row.add(residual(offset))
        if crop_ms is not None:
            rows["crop only"].add(residual(np.eye(3)), crop_ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs-per-set", type=int, default=12)
    parser.add_argument("--fields", type=int, default=2)
    parser.add_argument("--flight-captures", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", type=Path, help="adds the learned row: a refiner checkpoint from "
                        "`ums align-train`, or a dense matcher's from bench/dense_matcher_train.py")
    parser.add_argument("--learned", action="store_true", help="add the learned cascade with the shipped refiner")
    parser.add_argument("--only", choices=["floor-free", "synth-flight"], help="print only these tables")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--validate-only", action="append", default=[], metavar="SET",
                        help="with --write-train-split: write this set's pairs to val only (e.g. llvip: its "
                             "licence is non-commercial); repeatable")
    parser.add_argument("--tiles", action="store_true",
                        help="add classical tile refinement after ECC (bench/tile_matchers.py) to the floor-free tables")
    parser.add_argument("--control", action="store_true",
                        help="floor-free tables also for the thermal image onto warps of itself")
    parser.add_argument("--motions", nargs="+", choices=["translation", "euclidean", "similarity"],
                        default=["translation", "euclidean", "similarity"], help="the ECC motions to run")
    parser.add_argument("--baseline", metavar="REV", help="add each ECC motion as it was at this git revision")
    parser.add_argument("--write-train-split", type=Path, metavar="DIR",
                        help="write the pairs the tables do not use (DIR/train, DIR/val) for `ums align-train`, then exit")
    args = parser.parse_args()
    if args.write_train_split is not None:
        write_training_split(args.write_train_split, args.pairs_per_set, validate_only=tuple(args.validate_only))
        return
    for name in [name for name, options in METHODS.items() if options.get("motion") not in (None, *args.motions)]:
        del METHODS[name]
    if args.baseline:
        METHODS.update(with_baseline(dict(METHODS), args.baseline))
    learned = args.weights is not None or args.learned
    if learned:
        name, method = learned_method(args.weights, args.device)
        METHODS[name] = method
    cv2.setNumThreads(1)
    if learned:
        import torch

        torch.set_num_threads(1)
    print(f"machine: {platform.processor() or platform.machine()}, OpenCV {cv2.__version__}, one thread")
    if args.only in (None, "floor-free"):
        methods = dict(METHODS)
        if args.tiles:
            from tile_matchers import tile_refined

            methods["ECC + tiles, ECC per tile"] = lambda f, m, mask: tile_refined(f, m, mask, "ecc", 64, 32.0)
            methods["ECC + tiles, NCC per tile"] = lambda f, m, mask: tile_refined(f, m, mask, "ncc", 48, 20.0)
        floor_free_tables(args.pairs_per_set, args.seed, methods, args.control)
    if args.only == "synth-flight":
        print_table("synth-flight (crop + align vs groundtruth.json, thermal px)",
                    synth_flight_rows(args.flight_captures, tuple(args.motions), args.baseline))
    if args.only:
        return
    for dataset in ("MSRS", "RoadScene"):
        print_table(f"superfusion-{dataset}", evaluate(superfusion_cases(dataset)))
    for dataset in BENCH_SETS:
        pairs = aligned_pairs(dataset, args.pairs_per_set)
        print_table(f"drone-{dataset.split('/')[0]}", evaluate(drone_cases(pairs, args.fields, args.seed)),
                    f"aligned-data floor: median ECC shift on unwarped pairs {floor_of(pairs):.2f} px")
    print_table("synth-flight (crop + align vs groundtruth.json, thermal px)",
                synth_flight_rows(args.flight_captures, tuple(args.motions), args.baseline))


if __name__ == "__main__":
    main()
