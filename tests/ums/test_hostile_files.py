"""Hostile but realistic source files: a FIFO or a 2 GiB sparse file named like a frame, names that
are not UTF-8, JPEG headers that lie about their size, absurd XMP numbers, a workspace inside the
flight it reads. Each becomes an issue naming the file; the rest of the batch is processed and
nothing is recorded as done that is not."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from tests.conftest import PROJECT_ROOT
from tests.ums.conftest import claim_size
from ums.crop import crop_workspace
from ums.core.executors import ExecutorSettings
from ums.dji.filenames import parse_capture_name
from ums.dji.jpeg import APP1, insert_segments, read_header
from ums.dji.xmp import build_xmp_packet, find_xmp_packet, parse_drone_dji
from ums.ingest import IngestConfig, NothingToIngest, ReadTask, check_flight, ingest_flight, read_file
from ums.manifest import manifest_records
from ums.core.workspace import Workspace

IN_PROCESS = ExecutorSettings(show_progress=False, workers=1)


def copy_flight(synthetic_flight: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the 4-capture synthetic flight: its root and the folder holding its frames."""
    root = tmp_path / "flight"
    shutil.copytree(synthetic_flight, root)
    return root, next((root / "DCIM").iterdir())


def messages(issues, path: Path | str) -> list[str]:
    return [issue.message for issue in issues if issue.file == str(path)]


def crop_results(ws: Workspace) -> dict[int, dict]:
    return {capture.sequence: ws.stage_result(capture.capture_id, "crop") for capture in ws.captures()}


# -- 1: a FIFO named like a frame ------------------------------------------------------------------
INGEST_SCRIPT = """
import json, sys
from ums.core.executors import ExecutorSettings
from ums.ingest import IngestConfig, ingest_flight
from ums.core.workspace import Workspace
with Workspace.open(sys.argv[2]) as ws:
    report = ingest_flight(ws, sys.argv[1], IngestConfig(), ExecutorSettings(show_progress=False, workers=1))
print(json.dumps({"captures": report.captures, "unreadable": report.unreadable,
                  "issues": [[issue.file, issue.message] for issue in report.issues]}))
"""


def release(fifo: Path) -> None:
    """Open the FIFO for writing and close it: a reader blocked in open() then sees end of file."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:  # no reader is waiting
        pass


def test_a_fifo_named_like_a_frame_is_skipped_without_opening_it(synthetic_flight, tmp_path):
    root, folder = copy_flight(synthetic_flight, tmp_path)
    fifo = folder / "DJI_20240517103200_0095_W.JPG"
    os.mkfifo(fifo)
    try:
        # a subprocess, so that an ingest blocked on the FIFO fails the test instead of hanging it
        done = subprocess.run([sys.executable, "-c", INGEST_SCRIPT, str(root), str(tmp_path / "ws")],
                              cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("ingest blocked on a FIFO named like a frame")
    finally:
        release(fifo)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["captures"], report["unreadable"]) == (4, 1)
    assert [m for f, m in report["issues"] if f == str(fifo)] == [
        "a FIFO (named pipe), not a regular file: skipped without opening it"]


@pytest.mark.parametrize("swapped", ["before the reader's check", "between its check and its open"])
def test_a_fifo_that_replaced_a_frame_after_the_scan_does_not_block_the_reader(tmp_path, monkeypatch, swapped):
    from ums import ingest

    fifo = tmp_path / "DJI_20240517103200_0095_W.JPG"
    os.mkfifo(fifo)
    if swapped == "between its check and its open":  # the check sees a regular file, the open the FIFO
        regular = tmp_path / "regular.JPG"
        regular.write_bytes(b"\xff\xd8")
        monkeypatch.setattr(ingest, "os", SimpleNamespace(**{**vars(os), "stat": lambda path: os.stat(regular)}))
    task = ReadTask(key=str(fifo), file=str(fifo), workspace_root=tmp_path, name=parse_capture_name(fifo.name),
                    extract_thermal_raw=False)
    results = []
    reader = threading.Thread(target=lambda: results.append(read_file(task)), daemon=True)
    reader.start()
    reader.join(timeout=20)
    blocked = reader.is_alive()
    release(fifo)
    reader.join(timeout=20)
    assert not blocked, "read_file blocked opening a FIFO"
    [read] = results
    assert (read.probe, read.sha256) == (None, None)
    unread = "opening" if swapped == "before the reader's check" else "reading"
    assert read.error == f"a FIFO (named pipe), not a regular file: skipped without {unread} it"


# -- 2: names that are not UTF-8 -------------------------------------------------------------------
def escaped(path: Path) -> str:
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def test_names_that_are_not_utf8_are_skipped_with_an_escaped_name_and_the_batch_goes_on(synthetic_flight, tmp_path):
    root, folder = copy_flight(synthetic_flight, tmp_path)
    bad_folder = folder.parent / os.fsdecode(b"DJI_\xff_synthetic")
    shutil.copytree(folder, bad_folder)
    bad_file = folder / os.fsdecode(b"DJI_20240517103400_0097_W\xe9.JPG")
    shutil.copy(sorted(folder.glob("*_W.JPG"))[0], bad_file)
    (folder / os.fsdecode(b"notes-\xff.txt")).write_text("other files are ignored as before")
    elsewhere = tmp_path / os.fsdecode(b"elsewhere-\xff")  # followed: a link's own name is UTF-8
    elsewhere.mkdir()
    (elsewhere / "notes.txt").write_text("pilot notes")
    (folder.parent / "linked").symlink_to(elsewhere)
    assert check_flight(root) == root.resolve()
    with Workspace.open(tmp_path / "ws") as ws:
        report = ingest_flight(ws, root, executor=IN_PROCESS)
        records = list(manifest_records(ws))
    assert (report.files_seen, report.captures, report.paired, report.unreadable) == (8, 4, 4, 2)
    assert str(folder.parent) + "/DJI_\\xff_synthetic" == escaped(bad_folder)
    assert messages(report.issues, escaped(bad_folder)) == [
        "the folder name is not valid UTF-8: skipped with everything in it; rename it to ingest it"]
    assert messages(report.issues, escaped(bad_file)) == [
        "the file name is not valid UTF-8: skipped; rename it to ingest it"]
    assert messages(report.issues, folder.parent / "linked") == [f"symbolic link to the folder {escaped(elsewhere)}: followed"]
    assert len(records) == 4 and all(r["folder"] == f"DCIM/{folder.name}" for r in records)


def test_a_flight_folder_whose_path_is_not_utf8_is_refused_in_one_line(synthetic_flight, tmp_path):
    bad_root = tmp_path / os.fsdecode(b"card-\xff")
    shutil.copytree(synthetic_flight, bad_root)
    expected = (f"no DJI capture can be ingested from {escaped(bad_root)}: its path is not valid UTF-8, which the "
                "workspace cannot record; rename the folder")
    with pytest.raises(NothingToIngest) as refused:
        check_flight(bad_root)
    assert str(refused.value) == expected
    with Workspace.open(tmp_path / "ws") as ws, pytest.raises(NothingToIngest) as refused:
        ingest_flight(ws, bad_root, executor=IN_PROCESS)
    assert str(refused.value) == expected


# -- 3, 4: headers that declare another size than their data ---------------------------------------
def test_a_wide_frame_claiming_8000x6000_over_4000x3000_data_is_refused_by_ingest(synthetic_flight, tmp_path):
    root, folder = copy_flight(synthetic_flight, tmp_path)
    wide = sorted(folder.glob("*_W.JPG"))[0]
    claim_size(wide, 8000, 6000)
    with Workspace.open(tmp_path / "ws") as ws:
        report = ingest_flight(ws, root, executor=IN_PROCESS)
        assert messages(report.issues, wide) == [
            "the JPEG header declares 8000x6000 pixels, but the DJI Matrice 30T's wide camera (W) writes 4000x3000: "
            "refused before decoding"]
        assert (report.captures, report.paired, report.unreadable) == (4, 3, 1)
        cropped = crop_workspace(ws, executor=IN_PROCESS)
        assert (cropped.planned, cropped.done, cropped.failed) == (3, 3, 0)
        assert crop_results(ws)[1] is None  # its capture has no visible frame left to crop


@pytest.mark.parametrize("side", [32000, 60000])
def test_a_thermal_frame_claiming_a_huge_size_is_refused_by_ingest(synthetic_flight, tmp_path, side):
    root, folder = copy_flight(synthetic_flight, tmp_path)
    thermal = sorted(folder.glob("*_T.JPG"))[0]
    claim_size(thermal, side, side)
    with Workspace.open(tmp_path / "ws") as ws:
        report = ingest_flight(ws, root, executor=IN_PROCESS)
        assert messages(report.issues, thermal) == [
            f"the JPEG header declares {side}x{side} pixels, but a DJI thermal frame (T) is 320x256, 336x256, "
            "640x480, 640x512 or 1280x1024: refused before decoding"]
        cropped = crop_workspace(ws, executor=IN_PROCESS)
        assert (cropped.planned, cropped.done, cropped.failed) == (3, 3, 0)
        assert not any("CV_IO_MAX_IMAGE_PIXELS" in issue.message for issue in report.issues + cropped.issues)


def test_a_frame_whose_header_changed_since_ingest_is_refused_by_crop_before_decoding(synthetic_flight, tmp_path):
    root, folder = copy_flight(synthetic_flight, tmp_path)
    wide, thermal = sorted(folder.glob("*_W.JPG"))[0], sorted(folder.glob("*_T.JPG"))[1]
    with Workspace.open(tmp_path / "ws") as ws:
        # no raw thermal: crop decodes the thermal JPEG's palette preview itself
        ingest_flight(ws, root, IngestConfig(extract_thermal_raw=False), IN_PROCESS)
        claim_size(wide, 8000, 6000)
        claim_size(thermal, 60000, 60000)
        cropped = crop_workspace(ws, executor=IN_PROCESS)
        assert (cropped.planned, cropped.done, cropped.failed) == (4, 2, 2)
        # a failed task's issue is filed under the capture's thermal frame: the message names the file at fault
        assert sorted(issue.message for issue in cropped.issues) == [
            f"crop failed: {wide}: its JPEG header now declares 8000x6000 pixels where ingest recorded 4000x3000; "
            "the file changed since ingest: rerun `ums ingest` (rerun `ums crop` to retry)",
            f"crop failed: {thermal}: its JPEG header now declares 60000x60000 pixels where ingest recorded 640x512; "
            "the file changed since ingest: rerun `ums ingest` (rerun `ums crop` to retry)"]
        statuses = {sequence: result["status"] for sequence, result in crop_results(ws).items()}
        assert statuses == {1: "failed", 2: "failed", 3: "done", 4: "done"}


def test_a_decode_of_another_size_than_declared_is_refused(synthetic_flight, tmp_path, monkeypatch):
    from ums import crop

    root, _ = copy_flight(synthetic_flight, tmp_path)
    with Workspace.open(tmp_path / "ws") as ws:
        ingest_flight(ws, root, executor=IN_PROCESS)
        real_decode = crop.decode_mapped

        def decode_too_small(path, flags):  # the visible JPEG only: the raw thermal PNG decodes as it is
            return np.zeros((10, 12, 3), np.uint8) if path.suffix == ".JPG" else real_decode(path, flags)

        monkeypatch.setattr(crop, "decode_mapped", decode_too_small)
        cropped = crop_workspace(ws, executor=IN_PROCESS)
        assert (cropped.done, cropped.failed) == (0, 4)
        wide = ws.captures()[0].frames["W"].path
        assert messages(cropped.issues, ws.captures()[0].frames["T"].path)[0] == (
            f"crop failed: {wide}: decoding it at 1/4 gave 12x10 pixels where its header declares 4000x3000 "
            "(1000x750 at 1/4); refused (rerun `ums crop` to retry)")


def test_image_data_too_small_for_the_declared_size_is_refused(tmp_path):
    from ums.camera import frame_size_problem

    header = read_header(cv2.imencode(".jpg", np.zeros((512, 640, 3), np.uint8))[1].tobytes())
    data = header.image_end - header.scan_offset
    # an unknown camera: no profile to hold it to, but 8000x6000 pixels need at least 1 bit per 8x8 block
    assert frame_size_problem("W", 8000, 6000, "SOME-OTHER-DRONE", data) == (
        f"the JPEG header declares 8000x6000 pixels, but the file holds only {data:,} bytes of image data, fewer than "
        "the 93,750 bytes (1 bit per 8x8 block) that many pixels need at the least: refused before decoding")
    assert frame_size_problem("W", 640, 512, "SOME-OTHER-DRONE", data) is None
    assert frame_size_problem("W", 8000, 6000, "SOME-OTHER-DRONE", None) is None  # truncated: no floor
    assert frame_size_problem("W", 12000, 9000, "SOME-OTHER-DRONE", 10**8) == (
        "the JPEG header declares 12000x9000 pixels (108 MP), over the 96 MP limit, twice the largest frame of "
        "the camera profiles: refused before decoding")
    # the real variants of other models: a 4056x3040 H20T wide frame, a 1280x1024 UHR thermal frame, the
    # M30T zoom's full resolution
    assert frame_size_problem("W", 4056, 3040, "ZH20T", 10**7) is None
    assert frame_size_problem("T", 1280, 1024, "M30T", 10**6) is None
    assert frame_size_problem("Z", 8000, 6000, "M30T", 10**7) is None
    assert frame_size_problem("Z", 4000, 3000, "m30t ", 10**7) is None


# -- 5: a 2 GiB sparse file named like a frame -----------------------------------------------------
def test_a_file_larger_than_any_frame_is_skipped_without_reading_it(synthetic_flight, tmp_path):
    root, folder = copy_flight(synthetic_flight, tmp_path)
    sparse = folder / "DJI_20240517103300_0096_W.JPG"
    with open(sparse, "wb") as file:
        file.truncate(2 << 30)
    with Workspace.open(tmp_path / "ws") as ws:
        report = ingest_flight(ws, root, executor=IN_PROCESS)
        assert messages(report.issues, sparse) == [
            "the file holds 2,147,483,648 bytes, more than a DJI frame can (at most 355,108,864 bytes): "
            "skipped without reading it"]
        assert (report.files_seen, report.captures, report.paired, report.unreadable) == (9, 4, 4, 1)
        again = ingest_flight(ws, root, executor=IN_PROCESS)
        assert (again.read, again.unchanged, again.unreadable) == (0, 9, 1)


# -- 6: absurd XMP numbers -------------------------------------------------------------------------
def set_xmp(path: Path, **changes: str) -> None:
    """Put a copy of the file's drone-dji XMP, with ``changes``, first among its APP1 segments."""
    data = path.read_bytes()
    fields = {name: field["raw"] for name, field in parse_drone_dji(find_xmp_packet(read_header(data).payloads(APP1))).items()}
    path.write_bytes(insert_segments(data, [(APP1, build_xmp_packet({**fields, **changes}))]))


def test_absurd_xmp_numbers_are_named_and_the_range_crop_falls_back_to_is_recorded(synthetic_flight, tmp_path):
    root, folder = copy_flight(synthetic_flight, tmp_path)
    wide = sorted(folder.glob("*_W.JPG"))
    set_xmp(wide[0], LRFTargetDistance="NaN")
    set_xmp(wide[1], LRFTargetDistance="0.000")
    set_xmp(wide[2], LRFTargetDistance="inf", GimbalPitchDegree="1e9")
    set_xmp(wide[3], LRFTargetDistance="0.000", RelativeAltitude="-500")
    with Workspace.open(tmp_path / "ws") as ws:
        report = ingest_flight(ws, root, executor=IN_PROCESS)
        assert messages(report.issues, wide[0]) == [
            "XMP LRFTargetDistance is 'NaN', not a finite number: later stages ignore it"]
        assert messages(report.issues, wide[1]) == []  # DJI writes 0 when the laser has no target
        assert messages(report.issues, wide[2]) == [
            "XMP GimbalPitchDegree is 1e9, outside the plausible -360..360°: later stages ignore it",
            "XMP LRFTargetDistance is 'inf', not a finite number: later stages ignore it"]
        assert messages(report.issues, wide[3]) == [
            "XMP RelativeAltitude is -500, outside the plausible -200..1500 m: later stages ignore it"]
        assert all(issue.level == "warning" for issue in report.issues)
        cropped = crop_workspace(ws, executor=IN_PROCESS)
        assert (cropped.done, cropped.failed) == (4, 0)
        results = crop_results(ws)
        altitude = {capture.sequence: capture.frames["W"].xmp["RelativeAltitude"].value for capture in ws.captures()}
        assert results[1]["distance_source"] == "RelativeAltitude / cos(gimbal) (LRF distance 'NaN' is not a number)"
        assert results[1]["distance_m"] == pytest.approx(altitude[1])  # the gimbal points straight down
        assert results[2]["distance_source"] == "RelativeAltitude / cos(gimbal) (LRF distance 0 m is not plausible)"
        assert results[2]["distance_m"] == pytest.approx(altitude[2])
        assert results[3]["distance_source"] == ("unknown (no parallax correction: LRF distance 'inf' is not a number; "
                                                 "GimbalPitchDegree 1e+09° is not plausible)")
        assert results[4]["distance_source"] == ("unknown (no parallax correction: LRF distance 0 m is not plausible; "
                                                 "RelativeAltitude -500 m is not plausible)")
        assert results[3].get("distance_m") is None and results[4].get("distance_m") is None
        shown = {Path(issue.file).name: (issue.level, issue.message) for issue in cropped.issues}
        assert shown[wide[1].name] == ("info", "parallax from RelativeAltitude / cos(gimbal) (LRF distance 0 m is not "
                                               "plausible)")
        assert shown[wide[3].name] == ("warning", "no parallax correction: LRF distance 0 m is not plausible; "
                                                  "RelativeAltitude -500 m is not plausible")


def test_probes_stored_by_an_older_version_are_checked_again(synthetic_flight, tmp_path):
    from ums.core.records import FileProbe

    root, folder = copy_flight(synthetic_flight, tmp_path)
    wide = sorted(folder.glob("*_W.JPG"))
    set_xmp(wide[0], RelativeAltitude="-500")
    with Workspace.open(tmp_path / "ws") as ws:
        ingest_flight(ws, root, executor=IN_PROCESS)
        unchanged = ingest_flight(ws, root, executor=IN_PROCESS)
        assert (unchanged.read, unchanged.unchanged) == (0, 8)  # what this version stored passes its checks
        # what an older version stored: the number as a number, no warning; a header of 8000x6000 accepted
        known = ws.known_files(str(root))
        old_altitude = FileProbe.model_validate_json(known[str(wide[0])]["probe_json"])
        old_altitude.xmp["RelativeAltitude"].value, old_altitude.issues = -500, []
        ws.record_probe(str(root), old_altitude)
        claim_size(wide[1], 8000, 6000)
        old_size = FileProbe.model_validate_json(known[str(wide[1])]["probe_json"])
        stat = wide[1].stat()
        ws.record_probe(str(root), old_size.model_copy(update={"width": 8000, "height": 6000, "size": stat.st_size,
                                                                "mtime_ns": stat.st_mtime_ns}))
        report = ingest_flight(ws, root, executor=IN_PROCESS)
        assert (report.read, report.unchanged, report.unreadable) == (2, 6, 1)
        assert messages(report.issues, wide[0]) == [
            "XMP RelativeAltitude is -500, outside the plausible -200..1500 m: later stages ignore it"]
        assert messages(report.issues, wide[1])[0].startswith("the JPEG header declares 8000x6000 pixels, but")
        stored = FileProbe.model_validate_json(ws.known_files(str(root))[str(wide[0])]["probe_json"])
        assert stored.xmp["RelativeAltitude"].value == "-500"


# -- 13: the workspace inside the flight folder ----------------------------------------------------
@pytest.mark.parametrize("where", ["inside the flight", "the flight folder itself"])
def test_ingest_never_reads_the_workspace_it_writes(synthetic_flight, tmp_path, where):
    root, _ = copy_flight(synthetic_flight, tmp_path)
    workspace = root / "ums-workspace" if where == "inside the flight" else root
    with Workspace.open(workspace) as ws:
        first = ingest_flight(ws, root, executor=IN_PROCESS)
        crop_workspace(ws, executor=IN_PROCESS)
        capture_id = ws.captures()[0].capture_id
        overlay = ws.root / "align" / capture_id / "overlay.jpg"  # what align writes
        overlay.parent.mkdir(parents=True)
        cv2.imwrite(str(overlay), np.full((512, 640, 3), 90, np.uint8))
        again = ingest_flight(ws, root, executor=IN_PROCESS)
    assert (first.files_seen, again.files_seen, again.unchanged, again.unreadable) == (8, 8, 8, 0)
    assert again.issues == [] and again.captures == 4
