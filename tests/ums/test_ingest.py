from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from tests.conftest import PROJECT_ROOT, shared_data
from tests.ums.dji.conftest import with_raw_block
from tests.ums.dji.conftest import BILLION_LAUGHS
from ums.cli import app
from ums.dji.jpeg import APP1, insert_segments
from ums.dji.xmp import XMP_APP1_PREFIX
from ums.core.executors import ExecutorSettings
from ums.ingest import IngestConfig, NothingToIngest, ingest_flight
from ums.manifest import manifest_records
from ums.core.records import FileProbe, ThermalRawRecord
from ums.synth import SynthFlightConfig, synth_flight
from ums.core.workspace import DATABASE_NAME, Workspace

QUIET = ExecutorSettings(show_progress=False)
IN_PROCESS = ExecutorSettings(show_progress=False, workers=1)


def flight_folder(root: Path) -> Path:
    return next((root / "DCIM").iterdir())


def ingest(flight: Path, workspace: Path):
    with Workspace.open(workspace) as ws:
        report = ingest_flight(ws, flight, IngestConfig(), QUIET)
        records = list(manifest_records(ws))
    return report, records


def issues_for(report, file_name: str) -> list[str]:
    return [i.message for i in report.issues if i.file and Path(i.file).name == file_name]


def test_synthetic_flight_pairs_every_capture(synthetic_flight, tmp_path):
    report, records = ingest(synthetic_flight, tmp_path / "ws")
    assert (report.files_seen, report.captures, report.paired, report.thermal_raw) == (8, 4, 4, 4)
    assert report.issues == []
    truth = json.loads((synthetic_flight / "groundtruth.json").read_text())
    for record, expected in zip(records, truth["captures"]):
        assert record["sequence"] == expected["sequence"]
        assert set(record["frames"]) == {"W", "T"}
        assert (record["frames"]["W"]["width"], record["frames"]["W"]["height"]) == (4000, 3000)
        assert record["xmp"]["ImageSource"]["value"] == "InfraredCamera"
        assert record["frames"]["W"]["xmp"]["ImageSource"]["value"] == "WideCamera"
        assert record["xmp"]["LRFTargetDistance"]["value"] == pytest.approx(expected["distance_m"], abs=1e-3)
        raw = record["thermal_raw"]
        assert raw["shape"] == [512, 640] and raw["dtype"] == "uint16"
        counts = cv2.imread(raw["path"], cv2.IMREAD_UNCHANGED)
        assert counts.dtype == np.uint16 and (counts.min(), counts.max()) == (raw["min"], raw["max"])


def test_late_thermal_file_joins_its_capture(tmp_path):
    # every 2nd T file is named one second after its W partner
    synth_flight(tmp_path / "f", SynthFlightConfig(n=2, late_thermal_every=2, show_progress=False))
    names = sorted(p.name for p in flight_folder(tmp_path / "f").iterdir())
    assert "DJI_20240517103003_0002_T.JPG" in names and "DJI_20240517103002_0002_W.JPG" in names
    report, records = ingest(tmp_path / "f", tmp_path / "ws")
    assert report.captures == 2 and report.paired == 2


def test_every_real_dji_model_ingests(tmp_path):
    report, records = ingest(shared_data("dji"), tmp_path / "ws")
    jpegs = [p for p in shared_data("dji").rglob("*") if p.suffix.lower() == ".jpg"]
    assert report.files_seen == len(jpegs) and report.captures == len(jpegs)
    assert report.unreadable == 0
    models = {r["exif"]["model"] for r in records}
    assert {"M30T", "M3T", "ZH20T", "ZH20N", "MAVIC2-ENTERPRISE-ADVANCED", "M3TD", "M4T", "H30T", "XT S", "FLIR"} <= models
    root = shared_data("dji").resolve()  # ingest records resolved paths
    by_name = {Path(r["frames"]["T"]["path"]).relative_to(root).as_posix(): r for r in records}
    assert by_name["tsdk_v1.4_dataset/M30T/DJI_0001_R.JPG"]["thermal_raw"]["shape"] == [512, 640]
    assert by_name["tsdk_v1.4_dataset/M30T/DJI_0001_R.JPG"]["frames"]["T"]["width"] == 1280
    assert by_name["tsdk_newer_via_thermal_parser/H30T/DJI_0001_R.JPG"]["thermal_raw"]["shape"] == [1024, 1280]
    assert by_name["tsdk_newer_via_thermal_parser/XT2/DJI_XT2.jpg"]["thermal_raw"] is None
    assert by_name["tsdk_newer_via_thermal_parser/M30T/DJI_0005_R.JPG"]["thermal_raw"]["palette"] == "IronRed"
    assert by_name["tsdk_v1.4_dataset/M3T/DJI_0001_R.JPG"]["exif"]["gps_latitude"] == pytest.approx(22.6939925, abs=1e-6)
    assert by_name["tsdk_v1.4_dataset/M3T/DJI_0001_R.JPG"]["xmp"]["RelativeAltitude"]["value"] == 87.243
    truncated = by_name["tsdk_v1.4_dataset/XTS/DJI_0001_R.jpg"]
    assert truncated["frames"]["T"]["jpeg_truncated"] and truncated["thermal_raw"]["shape"] == [512, 640]
    assert any("truncated" in m for m in issues_for(report, "DJI_0001_R.jpg"))
    assert any("FLIR FFF" in m for m in issues_for(report, "DJI_XT2.jpg"))
    # the same sequence number in sibling folders stays two captures
    assert len({r["capture_id"] for r in records}) == len(records)


@pytest.fixture()
def hostile_flight(synthetic_flight, tmp_path) -> tuple[Path, Path]:
    """The synthetic flight plus every kind of bad input the ingest stage must survive."""
    root = tmp_path / "flight"
    shutil.copytree(synthetic_flight, root)
    folder = flight_folder(root)
    w_files = sorted(folder.glob("*_W.JPG"))
    t_files = sorted(folder.glob("*_T.JPG"))
    (folder / "DJI_20240517103100_0090_W.JPG").write_bytes(b"")  # zero bytes
    t_data = t_files[0].read_bytes()
    (folder / "DJI_20240517103102_0091_T.JPG").write_bytes(t_data[:300_000])  # cut inside APP3
    w_data = w_files[0].read_bytes()
    (folder / "DJI_20240517103104_0092_W.JPG").write_bytes(w_data[: len(w_data) - 100_000])  # cut in the scan
    png = cv2.imencode(".png", np.zeros((8, 8), np.uint8))[1].tobytes()
    (folder / "DJI_20240517103106_0093_T.JPG").write_bytes(png)  # a PNG named .JPG
    hostile = insert_segments(cv2.imencode(".jpg", np.zeros((512, 640, 3), np.uint8))[1].tobytes(),
                              [(APP1, XMP_APP1_PREFIX + BILLION_LAUGHS)])
    (folder / "DJI_20240517103108_0094_T.JPG").write_bytes(hostile)  # entity-expansion XMP
    t_files[-1].unlink()  # W without T
    (folder / "notes.txt").write_text("pilot notes")
    (folder / "IMG_0001.JPG").write_bytes(cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    shutil.copy(w_files[1], folder.parent / w_files[1].name)  # the same file in another folder
    # the same sequence numbers and times in a second folder of different captures
    synth_flight(tmp_path / "other", SynthFlightConfig(n=2, seed=9, show_progress=False))
    shutil.move(str(flight_folder(tmp_path / "other")), folder.parent / "DJI_202405171030_002_second")
    return root, folder


def test_bad_inputs_are_recorded_and_the_batch_continues(hostile_flight, tmp_path):
    root, folder = hostile_flight
    report, records = ingest(root, tmp_path / "ws")
    assert issues_for(report, "DJI_20240517103100_0090_W.JPG") == ["empty file (0 bytes)"]
    assert "runs past the end of the file (truncated)" in issues_for(report, "DJI_20240517103102_0091_T.JPG")[0]
    assert any("truncated" in m for m in issues_for(report, "DJI_20240517103104_0092_W.JPG"))
    assert issues_for(report, "DJI_20240517103106_0093_T.JPG") == ["a PNG file named like a DJI JPEG; skipped"]
    assert any("XMP ignored" in m and "refused" in m for m in issues_for(report, "DJI_20240517103108_0094_T.JPG"))
    assert issues_for(report, "IMG_0001.JPG")[0].startswith("not a DJI file")
    assert any("duplicate of" in m for m in issues_for(report, "DJI_20240517103002_0002_W.JPG"))
    unpaired = [r for r in records if r["sequence"] == 4 and r["folder"].endswith("synthetic")]
    assert set(unpaired[0]["frames"]) == {"W"}
    assert "visible frame without a thermal partner (T)" in [i["message"] for i in unpaired[0]["issues"]]
    # 4 synthetic captures (one unpaired), 2 in the second folder, the scan-truncated W, the
    # hostile-XMP T; the unreadable ones are not captures but are recorded
    assert report.captures == 8 and report.paired == 3 + 2
    assert report.unreadable == 4  # empty, cut header, PNG, non-DJI JPEG
    second = [r for r in records if r["folder"].endswith("_002_second")]
    first = [r for r in records if r["folder"].endswith("_synthetic")]
    assert {r["sequence"] for r in second} <= {r["sequence"] for r in first}
    assert not {r["capture_id"] for r in second} & {r["capture_id"] for r in first}
    every_issue = {issue.file for issue in report.issues}
    assert all(Path(f).is_absolute() for f in every_issue)



def test_raw_blocks_that_do_not_fit_their_frame_are_named_and_not_used(synthetic_flight, tmp_path):
    root = tmp_path / "flight"
    shutil.copytree(synthetic_flight, root)
    t_files = sorted(flight_folder(root).glob("*_T.JPG"))
    counts = np.ones((512, 640), "<u2")
    bad = {t_files[0].name: counts[::2, ::2].tobytes(),  # a 320x256 block in a 640x512 file
           t_files[1].name: counts.tobytes()[:-2],  # two bytes short
           t_files[2].name: counts.tobytes() + b"\x00" * 4}  # padded
    for path in t_files[:3]:
        path.write_bytes(with_raw_block(path.read_bytes(), bad[path.name]))
    report, records = ingest(root, tmp_path / "ws")
    messages = {name: " | ".join(issues_for(report, name)) for name in bad}
    assert "APP3 raw block holds 163840 bytes (320x256); a 640x512 16-bit frame needs 655360" in messages[t_files[0].name]
    assert "APP3 raw block holds 655358 bytes; a 640x512 16-bit frame needs 655360" in messages[t_files[1].name]
    assert "APP3 raw block holds 655364 bytes; a 640x512 16-bit frame needs 655360" in messages[t_files[2].name]
    assert all("palette preview" in m and "FLIR" not in m for m in messages.values())
    thermal = {Path(r["frames"]["T"]["path"]).name: r["thermal_raw"] for r in records}
    assert [thermal[name] for name in bad] == [None, None, None]
    assert report.thermal_raw == 1 and thermal[t_files[3].name]["shape"] == [512, 640]



def test_a_raw_layout_recorded_by_an_older_version_is_checked_again(synthetic_flight, tmp_path):
    root = tmp_path / "flight"
    shutil.copytree(synthetic_flight, root)
    thermal = sorted(flight_folder(root).glob("*_T.JPG"))[0]
    thermal.write_bytes(with_raw_block(thermal.read_bytes(), np.ones((256, 320), "<u2").tobytes()))
    ingest(root, tmp_path / "ws")
    with Workspace.open(tmp_path / "ws") as ws:  # what ingest stored before raw layouts were checked
        probe = FileProbe.model_validate_json(ws.known_files(str(root))[str(thermal)]["probe_json"])
        probe.thermal_raw = ThermalRawRecord(path="thermal_raw/old.png", shape=(256, 320), min=1, max=1,
                                             source_marker="APP3")
        cv2.imwrite(str(ws.absolute(probe.thermal_raw.path)), np.ones((256, 320), np.uint16))
        ws.record_probe(str(root), probe)
    report, records = ingest(root, tmp_path / "ws")
    assert (report.read, report.unchanged) == (1, 7)
    assert next(r for r in records if r["frames"]["T"]["path"] == str(thermal))["thermal_raw"] is None

def run_cli(*args: str):
    return CliRunner().invoke(app, [*map(str, args), "--no-progress"])


@pytest.mark.parametrize("content", ["missing", "empty", "other files", "non-DJI JPEGs", "unreadable DJI names"])
def test_a_folder_without_dji_files_fails_with_a_hint_and_creates_no_workspace(tmp_path, content):
    flight = tmp_path / "card"
    if content != "missing":
        (flight / "DCIM" / "100MEDIA").mkdir(parents=True)
    if content == "other files":
        (flight / "DCIM" / "100MEDIA" / "DJI_0001.MP4").write_bytes(b"\x00" * 64)
    if content == "non-DJI JPEGs":
        jpeg = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
        (flight / "DCIM" / "100MEDIA" / "IMG_0001.JPG").write_bytes(jpeg)
        (flight / "DCIM" / "100MEDIA" / "DJI_0001.JPG").write_bytes(jpeg)  # DJI-like name, no camera letter
    if content == "unreadable DJI names":
        (flight / "DCIM" / "100MEDIA" / "DJI_20240517103000_0001_W.JPG").write_bytes(b"")
    result = run_cli("ingest", flight, "--workspace", tmp_path / "ws")
    assert result.exit_code != 0
    assert not (tmp_path / "ws").exists()
    if content == "missing":
        assert "does not exist" in result.output
    else:
        assert "no DJI capture" in result.output and "DJI_<time>_<seq>_W, _Z or _T .JPG" in result.output
        assert "every folder below it" in result.output and "DCIM" in result.output
    if content == "non-DJI JPEGs":
        assert "2 JPEG files, none a DJI capture" in result.output and "not a DJI file" in result.output


def test_a_folder_without_dji_files_leaves_an_existing_workspace_untouched(synthetic_flight, tmp_path):
    assert run_cli("ingest", synthetic_flight, "--workspace", tmp_path / "ws").exit_code == 0
    (tmp_path / "empty").mkdir()
    result = run_cli("ingest", tmp_path / "empty", "--workspace", tmp_path / "ws")
    assert result.exit_code != 0 and "no DJI capture" in result.output
    with Workspace.open(tmp_path / "ws", create=False) as ws:
        assert len(ws.runs("ingest")) == 1 and ws.capture_count() == 4
    with Workspace.open(tmp_path / "ws2") as ws, pytest.raises(NothingToIngest, match="found no JPEG"):
        ingest_flight(ws, tmp_path / "empty", IngestConfig(), QUIET)  # the library call refuses it too, before recording a run


def test_symlinked_folders_are_followed_once_and_cycles_are_named(synthetic_flight, tmp_path):
    root = tmp_path / "card"
    dcim = root / "DCIM"
    shutil.copytree(flight_folder(synthetic_flight), dcim / "DJI_202405171030_001_synthetic")
    synth_flight(tmp_path / "other", SynthFlightConfig(n=2, seed=9, show_progress=False))
    elsewhere = tmp_path / "elsewhere"
    shutil.move(str(flight_folder(tmp_path / "other")), elsewhere)
    (dcim / "a_link").symlink_to(elsewhere, target_is_directory=True)  # a flight kept on another disk
    (dcim / "b_link").symlink_to(elsewhere, target_is_directory=True)  # the same folder again
    (dcim / "c_inside").symlink_to(dcim / "DJI_202405171030_001_synthetic", target_is_directory=True)
    (elsewhere / "loop").symlink_to(tmp_path, target_is_directory=True)  # leads back above the flight
    report, records = ingest(root, tmp_path / "ws")
    assert (report.files_seen, report.captures, report.paired, report.duplicates) == (12, 6, 6, 0)
    linked = [r for r in records if r["folder"] == "DCIM/a_link"]
    assert len(linked) == 2 and all(r["frames"]["T"]["path"].startswith(str(dcim / "a_link")) for r in linked)
    assert issues_for(report, "a_link") == [f"symbolic link to the folder {elsewhere}: followed"]
    assert issues_for(report, "b_link") == [f"symbolic link to the folder {elsewhere}, which is ingested as "
                                            f"{dcim / 'a_link'}; not followed"]
    assert issues_for(report, "c_inside") == [f"symbolic link to the folder {dcim / 'DJI_202405171030_001_synthetic'}, "
                                              f"which is ingested as {dcim / 'DJI_202405171030_001_synthetic'}; not followed"]
    assert issues_for(report, "loop") == [f"symbolic link to the folder {tmp_path}, which holds {root} (ingested already); "
                                          "not followed, as it would loop or ingest files twice"]

def test_reingest_is_idempotent_and_tracks_changes(synthetic_flight, tmp_path):
    root = tmp_path / "flight"
    shutil.copytree(synthetic_flight, root)
    folder = flight_folder(root)
    first, records_first = ingest(root, tmp_path / "ws")
    again, records_again = ingest(root, tmp_path / "ws")
    assert (again.read, again.unchanged) == (0, 8)
    assert records_again == records_first
    # a new capture, a removed file and a changed file
    synth_flight(tmp_path / "more", SynthFlightConfig(n=5, seed=11, show_progress=False))
    newest = sorted(flight_folder(tmp_path / "more").glob("*_0005_*"))
    for path in newest:
        shutil.copy(path, folder / path.name)
    removed = sorted(folder.glob("*_0001_T.JPG"))[0]
    removed.unlink()
    changed = sorted(folder.glob("*_0002_T.JPG"))[0]
    changed.write_bytes(changed.read_bytes() + b"\x00" * 16)
    later, records_later = ingest(root, tmp_path / "ws")
    assert later.read == 3 and later.removed == 1 and later.captures == 5
    assert any("no longer in the flight folder" in m for m in issues_for(later, removed.name))
    by_sequence = {r["sequence"]: r for r in records_later}
    assert set(by_sequence[1]["frames"]) == {"W"}
    assert by_sequence[2]["frames"]["T"]["sha256"] != records_first[1]["frames"]["T"]["sha256"]
    with Workspace.open(tmp_path / "ws") as ws:
        assert len(ws.runs("ingest")) == 3 and all(run["finished_at"] for run in ws.runs())


def replicate(folder: Path, copies: int) -> None:
    """Grow a flight to many distinct captures: copies of its files under new sequence numbers,
    each with different bytes after the image (so content hashes differ)."""
    originals = sorted(folder.glob("DJI_*.JPG"))
    for copy in range(1, copies + 1):
        for path in originals:
            stamp, sequence, letter = path.stem.split("_")[1:]
            name = f"DJI_{stamp}_{int(sequence) + 100 * copy:04d}_{letter}.JPG"
            (folder / name).write_bytes(path.read_bytes() + b"\x00" * copy)


def test_sigkill_mid_ingest_then_rerun_is_consistent(synthetic_flight, tmp_path):
    root = tmp_path / "flight"
    shutil.copytree(synthetic_flight, root)
    replicate(flight_folder(root), copies=12)  # 52 captures, 104 files
    workspace = tmp_path / "ws"
    command = [sys.executable, "-m", "ums", "ingest", str(root), "--workspace", str(workspace), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    recorded = _wait_for_recorded_files(workspace / DATABASE_NAME, at_least=5, process=process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert 5 <= recorded < 104, "the ingest was not caught in the middle"
    rerun, records = ingest(root, tmp_path / "ws")
    assert rerun.unchanged >= recorded and rerun.read == 104 - rerun.unchanged
    _, clean = ingest(root, tmp_path / "clean")
    assert _comparable(records) == _comparable(clean)
    assert not list(workspace.rglob("*.tmp"))
    connection = sqlite3.connect(workspace / DATABASE_NAME)
    assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    for record in records:
        assert cv2.imread(record["thermal_raw"]["path"], cv2.IMREAD_UNCHANGED).shape == (512, 640)


def _wait_for_recorded_files(database: Path, at_least: int, process: subprocess.Popen) -> int:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if database.exists():
            try:
                connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=0.1)
                count = connection.execute("SELECT COUNT(*) FROM files").fetchone()[0]
                connection.close()
                if count >= at_least:
                    return count
            except sqlite3.OperationalError:
                pass  # the schema is still being created
        time.sleep(0.002)
    pytest.fail("the ingest subprocess ended before it could be killed mid-way")


def _comparable(records: list[dict]) -> list[dict]:
    """Manifest records without the parts that name the workspace folder."""
    out = []
    for record in records:
        record = json.loads(json.dumps(record))
        record["thermal_raw"]["path"] = Path(record["thermal_raw"]["path"]).name
        out.append(record)
    return out


def test_a_crash_inside_a_reader_is_contained(synthetic_flight, tmp_path, monkeypatch):
    import ums.ingest

    real_read_exif = ums.ingest.read_exif
    calls = []

    def exploding_read_exif(block):
        calls.append(block)
        if len(calls) == 2:
            raise ZeroDivisionError("division by zero in an IFD")
        return real_read_exif(block)

    monkeypatch.setattr(ums.ingest, "read_exif", exploding_read_exif)
    with Workspace.open(tmp_path / "ws") as ws:  # one process, so the patch counts every call
        report = ingest_flight(ws, synthetic_flight, IngestConfig(), IN_PROCESS)
    errors = [i for i in report.issues if i.level == "error"]
    assert len(errors) == 1 and "unexpected ZeroDivisionError" in errors[0].message
    assert Path(errors[0].file).name == "DJI_20240517103000_0001_W.JPG"
    assert report.captures == 4 and report.unreadable == 1


def test_worker_processes_and_one_process_agree(synthetic_flight, tmp_path):
    root = tmp_path / "flight"
    shutil.copytree(synthetic_flight, root)
    replicate(flight_folder(root), copies=2)  # 24 files: enough for the process pool
    manifests = []
    for workers in (1, 2):
        with Workspace.open(tmp_path / f"ws{workers}") as ws:
            report = ingest_flight(ws, root, IngestConfig(), ExecutorSettings(show_progress=False, workers=workers))
            manifests.append(_comparable(list(manifest_records(ws))))
        assert report.read == 24 and report.captures == 12
    assert manifests[0] == manifests[1]


def test_a_file_whose_reading_raises_once_is_failed_and_read_again_by_the_rerun(synthetic_flight, tmp_path, monkeypatch):
    from ums import ingest as ingest_module

    real_read_header, calls = ingest_module.read_header, []

    def read_header_out_of_memory_once(data):
        calls.append(1)
        if len(calls) == 3:
            raise MemoryError("cannot allocate")
        return real_read_header(data)

    monkeypatch.setattr(ingest_module, "read_header", read_header_out_of_memory_once)
    with Workspace.open(tmp_path / "ws") as ws:
        report = ingest_flight(ws, synthetic_flight, executor=IN_PROCESS)  # in this process, where the patch is
        assert (report.planned, report.done, report.failed, report.skipped) == (8, 7, 1, 0)
        [issue] = [i for i in report.issues if i.level == "error"]
        assert issue.message == "ingest failed: unexpected MemoryError: cannot allocate (rerun `ums ingest` to retry)"
        assert issue.file not in ws.known_files(str(synthetic_flight.resolve()))  # nothing kept: read again next time
        again = ingest_flight(ws, synthetic_flight, executor=IN_PROCESS)
        assert (again.done, again.skipped, again.failed, again.captures, again.paired) == (1, 7, 0, 4, 4)
        assert [i for i in again.issues if i.level == "error"] == []
