from __future__ import annotations

import json
import os
from pathlib import Path

from typer.testing import CliRunner

from ums.cli import app
from ums.core.executors import ExecutorSettings
from ums.ingest import IngestConfig, ingest_flight
from ums.manifest import manifest_records
from ums.core.workspace import Workspace

POSITION_EXIF = ("gps_latitude", "gps_longitude", "gps_altitude_m")
POSITION_XMP = ("GpsLatitude", "GpsLongitude", "AbsoluteAltitude", "LRFTargetLat", "LRFTargetLon", "LRFTargetAlt",
                "LRFTargetAbsAlt")


def leaves(value):
    """Every string and number in a JSON value, keys included."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from leaves(item)
    elif value is not None and not isinstance(value, bool):
        yield value


def private_values(records: list[dict]) -> tuple[set[str], set[float]]:
    """The position and serial-number texts and numbers of unredacted records."""
    texts, numbers = set(), set()
    for record in records:
        for holder in [record, *record["frames"].values()]:
            for key in POSITION_EXIF:
                numbers.add(holder["exif"][key])
            texts.add(holder["exif"]["serial_number"])
            for key in (*POSITION_XMP, "DroneSerialNumber", "CameraSerialNumber"):
                texts.add(holder["xmp"][key]["raw"])
                if isinstance(holder["xmp"][key]["value"], float):
                    numbers.add(holder["xmp"][key]["value"])
    return texts - {None}, numbers - {None}


def test_redaction_leaves_no_path_position_or_serial(synthetic_flight, tmp_path):
    with Workspace.open(tmp_path / "ws") as ws:
        ingest_flight(ws, synthetic_flight, IngestConfig(), ExecutorSettings(show_progress=False))
        plain = list(manifest_records(ws))
        redacted = list(manifest_records(ws, redact=True))
    texts, numbers = private_values(plain)
    assert len(numbers) > 8 and {"SYNTH-DRONE-0001", "SYNTH-CAM-0001"} <= texts
    for record in redacted:
        for leaf in leaves(record):
            if isinstance(leaf, str):
                assert not os.path.isabs(leaf) and str(tmp_path.parent) not in leaf, leaf
                assert leaf not in texts and not any(text in leaf for text in texts if len(text) > 5), leaf
                assert "47.39" not in leaf, leaf
            else:
                assert not any(abs(leaf - number) < 1e-6 for number in numbers), leaf
    root = Path(plain[0]["flight_root"])
    for before, after in zip(plain, redacted):
        assert after["flight_root"] == root.name == synthetic_flight.name
        assert after["folder"] == before["folder"]
        assert {key: root / frame["path"] for key, frame in after["frames"].items()} == {
            key: Path(frame["path"]) for key, frame in before["frames"].items()}
        assert tmp_path / "ws" / after["thermal_raw"]["path"] == Path(before["thermal_raw"]["path"])
        assert after["xmp"]["LRFTargetDistance"] == before["xmp"]["LRFTargetDistance"]  # a range, not a place
        assert after["exif"]["model"] == before["exif"]["model"]


def test_redacted_issue_files_and_messages_name_no_absolute_path(synthetic_flight, tmp_path):
    import shutil

    root = tmp_path / "flight"
    shutil.copytree(synthetic_flight, root)
    folder = next((root / "DCIM").iterdir())
    next(folder.glob("*_0004_T.JPG")).unlink()  # an unpaired W: a capture issue naming its file
    with Workspace.open(tmp_path / "ws") as ws:
        ingest_flight(ws, root, IngestConfig(), ExecutorSettings(show_progress=False))
        redacted = [r for r in manifest_records(ws, redact=True) if r["issues"]]
    assert redacted and all(not os.path.isabs(issue["file"]) for r in redacted for issue in r["issues"])
    assert str(tmp_path) not in json.dumps(redacted)


def test_manifest_command_redacts(synthetic_flight, tmp_path):
    runner = CliRunner()
    workspace = str(tmp_path / "ws")
    assert runner.invoke(app, ["ingest", str(synthetic_flight), "--workspace", workspace, "--no-progress"]).exit_code == 0
    output = runner.invoke(app, ["manifest", "--workspace", workspace, "--json", "--redact"]).stdout
    assert str(synthetic_flight) not in output and workspace not in output
    assert "LRFTargetAlt" not in output and "LRFTargetLat" not in output and "LRFTargetDistance" in output
