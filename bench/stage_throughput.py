"""Captures/s of the per-capture stages by executor, and crop against its decode floor.

    python bench/stage_throughput.py [--n 32] [--flight DIR] [--repeat 1] [--floor-repeat 5] [--no-autolabel]
                                     [--floor-only] [--pipeline-only]

First table: ingest, crop, align and autolabel on a synthetic M30T flight of --n captures, each under
four executors: in this process (1 worker), a local process pool with one worker per core, a Dask
LocalCluster on 127.0.0.1 that each stage run starts (as `--executor dask` alone does), and a
running loopback cluster (`dask scheduler` + one single-threaded `dask worker` per core, reached
with --scheduler as a campaign would). Every measurement
starts from a fresh workspace that holds exactly the earlier stages' outputs (copied before the
clock starts), so nothing is skipped; the time includes starting the executor, as a user's run
does. Autolabel runs tiny randomly initialised models (tests/ums/autolabel/models.py): its rows
measure the runner, the I/O and the merge, not a real detector. Ratios: against 1 worker, same stage.
With --repeat N each row is the median of N runs, and the executors take turns within each
repetition (1 worker, pool, LocalCluster, running cluster, then again), so that the slow spells of
a shared VM fall on all of them alike.

Second table: crop's ms per frame on one core (`ums.crop.process`, OpenCV and BLAS on one thread)
against decoding the same JPEGs at 1/4 size (cv2.IMREAD_REDUCED_COLOR_4, as crop decodes): with
cv2.imread, the floor the target is set against, and the way crop itself decodes (from the file's
pages mapped in place, ~3 ms faster here), so that the ratio also shows what crop adds to its own
decode. The ratios are medians of each repetition's own ratio. --floor-only prints only that table.

Pipeline table: ingest + crop + align of the same flight into a fresh workspace, on one worker and
on every core, as captures/s and as a ratio to decoding the flight's W frames at 1/4 size on one
core in the same repetition (the floor a geometry pipeline cannot beat), with the time it projects
for a 2,000-capture flight. The one-worker and all-core runs take turns within each repetition.
--pipeline-only prints only that table.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from timing import median_seconds  # noqa: E402  (bench/timing.py)

import cv2  # noqa: E402

from ums import crop  # noqa: E402
from ums.align.stage import AlignConfig, align_workspace  # noqa: E402
from ums.core.executors import ExecutorSettings, open_executor, reuse_freed_memory, single_threaded  # noqa: E402
from ums.ingest import IngestConfig, ingest_flight  # noqa: E402
from ums.synth import SynthFlightConfig, synth_flight  # noqa: E402
from ums.core.workspace import Workspace  # noqa: E402
from tests.ums.core.dask_cluster import loopback_cluster  # noqa: E402

STAGES = ("ingest", "crop", "align", "autolabel")
# a car and a person in every letterboxed 640x640 frame, as the autolabel tests' detector answers
DETECTOR_ROWS = [[0, 100, 164, 220, 224, 2, 0.9], [0, 400, 264, 430, 344, 0, 0.7]]
TARGETS = {"scaling": 1.6, "dask": 0.25, "floor": 1.3}
# crop's own decode flags at 1/4 size (no EXIF orientation applied)
FLOOR_FLAGS = crop.DECODE_FLAGS[4]
STARTUP = "start+stop"  # the executor alone, no stage code
UNLOCKED = shutil.ignore_patterns("ums.lock")  # a copy is a new workspace, not one in use


@dataclass(frozen=True)
class Executor:
    name: str
    settings: dict


CORES = len(os.sched_getaffinity(0))
# set by main() once the loopback cluster runs: its scheduler's address
RUNNING_CLUSTER: dict[str, str] = {}


def executors() -> list[Executor]:
    """1 worker (the baseline), the local pool, a LocalCluster each stage run starts for itself, and a
    cluster that runs before and after (as a campaign's does: workers keep their imports)."""
    found = [Executor("1 worker", {"workers": 1}),
             Executor(f"local pool, {CORES} workers", {"workers": CORES}),
             Executor(f"Dask LocalCluster, {CORES} workers", {"workers": CORES, "executor": "dask"})]
    if RUNNING_CLUSTER:
        found.append(Executor(f"Dask running cluster, {CORES} workers",
                              {"executor": "dask", "scheduler": RUNNING_CLUSTER["address"]}))  # its CORES workers
    return found


def autolabel_config(scratch: Path) -> object:
    from tests.ums.autolabel.models import TINY_SAM, tiny_sam_checkpoint, yolov7_end_to_end
    from ums.autolabel.detectors import DetectorConfig
    from ums.autolabel.sam import SamConfig
    from ums.autolabel.stage import AutolabelConfig

    detector = DetectorConfig(weights=yolov7_end_to_end(scratch / "yolov7.onnx", DETECTOR_ROWS))
    sam = SamConfig(checkpoint=tiny_sam_checkpoint(scratch / "sam.pth"), model_type="custom", architecture=TINY_SAM)
    return AutolabelConfig(detector=detector, sam=sam)


def run_stage(stage: str, root: Path, flight: Path, settings: dict, labelling: object | None) -> int:
    """One stage on one workspace, on the executor ``settings`` name; the number of captures it did
    (all of them, or the bench is wrong)."""
    executor = ExecutorSettings(show_progress=False, **settings)
    with Workspace.open(root) as workspace:
        if stage == "ingest":
            ingested = ingest_flight(workspace, flight, IngestConfig(), executor)
            if ingested.unreadable or ingested.incomplete or ingested.paired != ingested.captures:
                raise RuntimeError(f"ingest {settings}: {ingested.rows()}")
            return ingested.captures
        if stage == "crop":
            report = crop.crop_workspace(workspace, crop.CropConfig(), executor)
        elif stage == "align":
            report = align_workspace(workspace, AlignConfig(), executor)
        else:
            from ums.autolabel.stage import autolabel_workspace

            report = autolabel_workspace(workspace, labelling, executor)
    if report.failed or report.not_run or report.skipped:
        raise RuntimeError(f"{stage} {settings}: {report.rows()} {report.issues[:1]}")
    return report.planned


class Workspaces:
    """For each stage, a workspace holding the earlier stages' outputs; fresh copies of it on demand."""

    def __init__(self, scratch: Path, flight: Path, stages: tuple[str, ...], labelling):
        self.scratch, self.flight = scratch, flight
        self.before: dict[str, Path] = {}
        self._count = itertools.count()
        building = scratch / "building"
        for stage in stages:
            if stage != "ingest":
                self.before[stage] = Path(shutil.copytree(building, scratch / f"before-{stage}", ignore=UNLOCKED))
            run_stage(stage, building, flight, {}, labelling)

    def fresh(self, stage: str) -> Path:
        target = self.scratch / f"{stage}-{next(self._count)}"
        if stage == "ingest":
            return target
        return Path(shutil.copytree(self.before[stage], target, ignore=UNLOCKED))


def stage_rows(workspaces: Workspaces, stages: tuple[str, ...], repeat: int, labelling) -> list[tuple[str, str, float, int]]:
    """Each stage under each executor, ``repeat`` times; the executors take turns within each
    repetition, so that a shared VM's slow spell falls on all of them alike rather than on one."""
    rows = []
    for stage in stages:
        seconds: dict[str, list[float]] = {executor.name: [] for executor in executors()}
        done = 0
        for _ in range(repeat):
            for executor in executors():
                root = workspaces.fresh(stage)
                start = time.perf_counter()
                done = run_stage(stage, root, workspaces.flight, executor.settings, labelling)
                seconds[executor.name].append(time.perf_counter() - start)
                shutil.rmtree(root)
        for name, times in seconds.items():
            rows.append((stage, name, statistics.median(times), done))
            print(f"  {stage:<10} {name:<28} {statistics.median(times):7.2f} s", flush=True)
    return rows


def startup_rows(repeat: int) -> list[tuple[str, str, float, int]]:
    """What every stage run pays once per executor: start it, one trivial task per worker, close it."""
    rows = []
    for executor in executors():
        settings = ExecutorSettings(show_progress=False, **executor.settings)
        workers = settings.workers or CORES  # a running cluster has the workers it was started with

        def cycle():
            pool = open_executor(settings, workers, "bench", preload=["ums.crop"])
            try:
                return list(pool.run(abs, range(workers)))
            finally:
                pool.close()

        rows.append((STARTUP, executor.name, median_seconds(cycle, repeat), 0))
    return rows


@dataclass
class Floor:
    """crop's ``process`` against decoding the same frames at 1/4 size, one core: ms per frame and
    crop's ratio to each decode, the median of the repetitions' own ratios (each repetition times
    the three back to back, so a shared VM's slow spell hits all alike)."""

    frames: int
    ms: dict[str, float]
    ratios: dict[str, float]


CROP_ROW = "crop (ums.crop.process)"
FLOOR_DECODES = {
    "decode 1/4 with cv2.imread (the floor)": lambda path: cv2.imread(path, FLOOR_FLAGS),
    "decode 1/4 from the mapped file (crop's)": lambda path: crop.decode_mapped(Path(path), FLOOR_FLAGS),
}


def crop_floor(workspaces: Workspaces, repeat: int) -> Floor:
    task_lists = []
    for _ in range(repeat + 1):  # one warm-up, then a fresh workspace per repetition: no file is replaced
        with Workspace.open(workspaces.fresh("crop")) as workspace:
            task_lists.append(crop.plan(workspace, crop.CropConfig()))
    paths = [task.capture.frames["W"].path for task in task_lists[0]]
    seconds: dict[str, list[float]] = {name: [] for name in (*FLOOR_DECODES, CROP_ROW)}
    with single_threaded():
        for index, tasks in enumerate(task_lists):
            measured = {name: median_seconds(lambda: [decode(path) for path in paths], 1)
                        for name, decode in FLOOR_DECODES.items()}
            measured[CROP_ROW] = median_seconds(lambda: [crop.process(task) for task in tasks], 1)
            if index:
                for name, value in measured.items():
                    seconds[name].append(value)
    ms = {name: statistics.median(values) * 1000 / len(paths) for name, values in seconds.items()}
    ratios = {name: statistics.median(c / d for c, d in zip(seconds[CROP_ROW], values))
              for name, values in seconds.items()}
    return Floor(len(paths), ms, ratios)



PIPELINE = ("ingest", "crop", "align")
PROJECTED_CAPTURES = 2000


def pipeline_rows(flight: Path, scratch: Path, repeat: int) -> dict[str, dict[str, float]]:
    """Ingest + crop + align on a fresh workspace per run, one worker and every core taking turns,
    each repetition also timing the 1/4 decode of the W frames (one core); medians of the ratios."""
    runs = {"1 worker": {"workers": 1}, f"{CORES} workers": {"workers": CORES}}
    paths = sorted(str(path) for path in flight.rglob("DJI_*_W.JPG"))
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    ratios: dict[str, list[float]] = {name: [] for name in runs}
    for repetition in range(repeat):
        with single_threaded():
            decode = median_seconds(lambda: [cv2.imread(path, FLOOR_FLAGS) for path in paths], 1)
        for name, settings in runs.items():
            root = scratch / f"pipeline-{repetition}-{settings['workers']}"
            start = time.perf_counter()
            for stage in PIPELINE:
                run_stage(stage, root, flight, settings, None)
            elapsed = time.perf_counter() - start
            shutil.rmtree(root)
            seconds[name].append(elapsed)
            ratios[name].append(elapsed / decode)
            print(f"  pipeline {name:<12} {elapsed:7.2f} s (decode floor {decode:.2f} s)", flush=True)
    return {name: {"seconds": statistics.median(seconds[name]), "vs decode": statistics.median(ratios[name]),
                   "captures": len(paths)} for name in runs}


def print_pipeline(rows: dict[str, dict[str, float]]) -> None:
    print(f"\n{'pipeline (ingest + crop + align)':<34} {'seconds':>8} {'captures/s':>11} {'vs 1/4 decode':>14} "
          f"{'vs 1 worker':>12} {'2,000 captures':>15}")
    one = rows["1 worker"]["seconds"]
    for name, row in rows.items():
        rate = row["captures"] / row["seconds"]
        print(f"{name:<34} {row['seconds']:8.2f} {rate:11.2f} {row['vs decode']:13.2f}x {one / row['seconds']:11.2f}x "
              f"{PROJECTED_CAPTURES / rate / 60:12.1f} min")
    print(f"targets: one worker <= 2.2x the decode: {_met(rows['1 worker']['vs decode'] <= 2.2)}; all cores >= 1.6x one "
          f"worker: {_met(one / rows[f'{CORES} workers']['seconds'] >= 1.6)}")


def seconds_of(rows, stages: tuple[str, ...], executor: str) -> float:
    return sum(seconds for stage, name, seconds, _ in rows if stage in stages and name == executor)


def print_tables(rows, floor: Floor) -> None:
    one = rows[0][1]
    print(f"\n{'stage':<10} {'executor':<28} {'seconds':>8} {'captures/s':>11} {'vs 1 worker':>12}")
    for stage, name, seconds, done in rows:
        rate = f"{done / seconds:11.2f}" if done else f"{'-':>11}"
        ratio = f"{seconds_of(rows, (stage,), one) / seconds:11.2f}x" if stage != STARTUP else f"{'-':>12}"
        print(f"{stage:<10} {name:<28} {seconds:8.2f} {rate} {ratio}")
    print_targets(rows)
    print_floor(floor)


def print_floor(floor: Floor) -> None:
    print(f"\n{'one core, ' + str(floor.frames) + ' frames':<42} {'ms/frame':>9} "
          f"{'crop vs this':>13}")
    for name, ms in floor.ms.items():
        ratio = f"{floor.ratios[name]:12.2f}x" if name != CROP_ROW else f"{'-':>13}"
        print(f"{name:<42} {ms:9.1f} {ratio}")
    ratio = floor.ratios[next(iter(FLOOR_DECODES))]
    print(f"crop against its floor: {ratio:.2f}x (target <= {TARGETS['floor']}x: {_met(ratio <= TARGETS['floor'])})")


def print_targets(rows) -> None:
    """crop+align, as measured and net of the two executor starts (one per stage run)."""
    names = list(dict.fromkeys(name for _, name, _, _ in rows))  # the executors measured, in order
    one, pool, *dasks = names
    geometry = ("crop", "align")
    for label, starts in (("as measured", 0), ("net of executor start", 2)):
        def total(name: str) -> float:
            return seconds_of(rows, geometry, name) - starts * seconds_of(rows, (STARTUP,), name)

        scaling = total(one) / total(pool)
        print(f"\ncrop+align, {label}: 1 -> {pool}: {scaling:.2f}x (target >= {TARGETS['scaling']}x: "
              f"{_met(scaling >= TARGETS['scaling'])})")
        for dask in dasks:
            dask_over = total(dask) / total(pool) - 1
            print(f"  {dask} against the local pool: {dask_over:+.0%} time "
                  f"(target within {TARGETS['dask']:.0%}: {_met(abs(dask_over) <= TARGETS['dask'])})")


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=32, help="captures in the synthetic flight")
    parser.add_argument("--flight", type=Path, default=Path(tempfile.gettempdir()) / "ums-bench-stages-flight")
    parser.add_argument("--repeat", type=int, default=1, help="fresh workspaces per stage and executor (median)")
    parser.add_argument("--floor-repeat", type=int, default=5, help="repetitions of the one-core crop and decode")
    parser.add_argument("--no-autolabel", action="store_true", help="skip autolabel (it imports torch)")
    parser.add_argument("--floor-only", action="store_true", help="only crop against its decode floor")
    parser.add_argument("--pipeline-only", action="store_true", help="only ingest + crop + align against the decode")
    args = parser.parse_args()
    stages = STAGES[:3] if args.no_autolabel else STAGES
    # as in every process that runs tasks (a one-worker run tunes this one): the decode floors are
    # then measured under the same allocator as the stages they are compared with
    reuse_freed_memory()

    if not (args.flight / "groundtruth.json").exists() or len(list(args.flight.rglob("DJI_*.JPG"))) != 2 * args.n:
        shutil.rmtree(args.flight, ignore_errors=True)
        print(f"writing a {args.n}-capture synthetic flight to {args.flight} ...", flush=True)
        synth_flight(args.flight, SynthFlightConfig(n=args.n, show_progress=False))
    scratch = Path(tempfile.mkdtemp(prefix="ums-bench-stages-"))
    machine = (f"machine: {platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores, "
               f"Python {platform.python_version()}, OpenCV {cv2.__version__}; flight: {args.n} captures")
    if args.pipeline_only:
        try:
            rows = pipeline_rows(args.flight, scratch, args.repeat)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        print("\n" + machine)
        print_pipeline(rows)
        return
    try:
        labelling = None if args.no_autolabel else autolabel_config(scratch)
        print("preparing the workspaces of each stage ...", flush=True)
        workspaces = Workspaces(scratch, args.flight, ("ingest", "crop") if args.floor_only else stages, labelling)
        if args.floor_only:
            print_floor(crop_floor(workspaces, args.floor_repeat))
            return
        with loopback_cluster(CORES, scratch) as address:
            RUNNING_CLUSTER["address"] = address
            rows = stage_rows(workspaces, stages, args.repeat, labelling) + startup_rows(3)
        RUNNING_CLUSTER.clear()
        floor = crop_floor(workspaces, args.floor_repeat)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print(f"\nmachine: {platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores, "
          f"Python {platform.python_version()}, OpenCV {cv2.__version__}; flight: {args.n} captures")
    print_tables(rows, floor)


if __name__ == "__main__":  # Dask's LocalCluster starts processes that import this file
    main()
