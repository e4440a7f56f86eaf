"""Ingest throughput on a synthetic M30T flight, against ExifTool on the same folder, same run.

    python bench/ingest.py [--n 200] [--flight DIR] [--repeat 3]

Rows (median of --repeat runs, page cache warm for all):
  exiftool -json -r          the baseline: every tag of every file, as JSON
  ums metadata               what ExifTool does: header walk, EXIF, drone-dji XMP per file
  ums ingest (new workspace) everything: + SHA-256, raw thermal PNGs, grouping, SQLite manifest
  ums re-ingest (unchanged)  the idempotent rerun
  raw thermal extraction     APP3 block -> uint16 array -> 16-bit PNG, per thermal frame
Ratios are ExifTool's time divided by the row's time (higher is faster than ExifTool).
A second table compares 16-bit PNG encodings of the raw thermal frames against OpenCV's default.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from timing import median_seconds  # noqa: E402  (bench/timing.py)

from ums.dji.exif import find_exif_block, read_exif  # noqa: E402
from ums.dji.jpeg import APP1, read_header  # noqa: E402
from ums.dji.rjpeg import extract_raw_thermal  # noqa: E402
from ums.dji.xmp import find_xmp_packet, parse_drone_dji  # noqa: E402
from ums.core.executors import ExecutorSettings  # noqa: E402
from ums.ingest import IngestConfig, ingest_flight  # noqa: E402
from ums.synth import SynthFlightConfig, synth_flight  # noqa: E402
from ums.core.atomic import FAST_PNG, write_image  # noqa: E402
import cv2  # noqa: E402
from ums.core.workspace import Workspace  # noqa: E402

QUIET = ExecutorSettings(show_progress=False)


def exiftool(flight: Path) -> None:
    subprocess.run(["exiftool", "-json", "-r", "-q", str(flight)], check=True, stdout=subprocess.DEVNULL)


def metadata_only(files: list[Path]) -> None:
    for path in files:
        header = read_header(path.read_bytes())
        app1 = header.payloads(APP1)
        read_exif(find_exif_block(app1))
        packet = find_xmp_packet(app1)
        if packet:
            parse_drone_dji(packet)


def raw_extraction(files: list[Path], out: Path) -> None:
    for index, path in enumerate(files):
        raw = extract_raw_thermal(read_header(path.read_bytes()))
        write_image(out / f"{index}.png", raw.counts, durable=False)  # as ingest writes them


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200, help="captures in the synthetic flight")
    parser.add_argument("--flight", type=Path, default=Path(tempfile.gettempdir()) / "ums-bench-flight")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("exiftool") is None:
        sys.exit("exiftool is not installed: apt-get install libimage-exiftool-perl")

    truth = args.flight / "groundtruth.json"
    files = sorted(args.flight.rglob("DJI_*.JPG")) if truth.exists() else []
    if len(files) != 2 * args.n:
        shutil.rmtree(args.flight, ignore_errors=True)
        print(f"writing a {args.n}-capture synthetic flight to {args.flight} ...", flush=True)
        synth_flight(args.flight, SynthFlightConfig(n=args.n, show_progress=False))
        files = sorted(args.flight.rglob("DJI_*.JPG"))
    thermal = [p for p in files if p.name.endswith("_T.JPG")]
    megabytes = sum(p.stat().st_size for p in files) / 1e6
    exiftool(args.flight)  # warm the page cache once for every row alike

    rows: list[tuple[str, float, int]] = []
    baseline = median_seconds(lambda: exiftool(args.flight), args.repeat)
    rows.append(("exiftool -json -r", baseline, args.n))
    rows.append(("ums metadata", median_seconds(lambda: metadata_only(files), args.repeat), args.n))
    scratch = Path(tempfile.mkdtemp(prefix="ums-bench-"))
    try:
        def fresh_ingest():
            workspace = scratch / f"ws-{time.monotonic_ns()}"
            with Workspace.open(workspace) as ws:
                ingest_flight(ws, args.flight, IngestConfig(), QUIET)

        rows.append(("ums ingest (new workspace)", median_seconds(fresh_ingest, args.repeat), args.n))
        with Workspace.open(scratch / "warm") as ws:
            ingest_flight(ws, args.flight, IngestConfig(), QUIET)
            rerun = median_seconds(lambda: ingest_flight(ws, args.flight, IngestConfig(), QUIET), args.repeat)
        rows.append(("ums re-ingest (unchanged)", rerun, args.n))
        raw_out = scratch / "raw"
        raw_out.mkdir()
        rows.append(("raw thermal extraction", median_seconds(lambda: raw_extraction(thermal, raw_out), args.repeat), len(thermal)))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}; flight: {args.n} captures, {len(files)} files, {megabytes:.0f} MB")
    print(f"{'row':<28} {'seconds':>8} {'items/s':>9} {'ms/file':>8} {'vs exiftool':>12}")
    for name, seconds, items in rows:
        per_file = seconds * 1000 / (len(thermal) if name.startswith("raw") else len(files))
        print(f"{name:<28} {seconds:8.3f} {items / seconds:9.1f} {per_file:8.2f} {baseline / seconds:11.2f}x")

    png_table(thermal, args.repeat)


def png_table(thermal: list[Path], repeat: int) -> None:
    frames = [extract_raw_thermal(read_header(p.read_bytes())).counts for p in thermal[:50]]
    variants = [
        ("OpenCV default", []),
        ("level 0 (stored), no filter", [cv2.IMWRITE_PNG_COMPRESSION, 0, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE]),
        ("level 1, up, Huffman (ums)", FAST_PNG),
    ]
    print(f"\n{'16-bit PNG, ' + str(len(frames)) + ' frames':<34} {'ms/frame':>8} {'KB/frame':>9} {'vs default':>11}")
    baseline = None
    for name, params in variants:
        seconds = median_seconds(lambda: [cv2.imencode(".png", f, params) for f in frames], repeat)
        size = sum(len(cv2.imencode(".png", f, params)[1]) for f in frames) / len(frames) / 1024
        baseline = baseline or seconds
        print(f"{name:<34} {seconds * 1000 / len(frames):8.2f} {size:9.0f} {baseline / seconds:10.2f}x")


if __name__ == "__main__":
    main()
