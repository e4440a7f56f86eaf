from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ums.cli import app

runner = CliRunner()


def test_ingest_status_manifest(synthetic_flight, tmp_path):
    workspace = str(tmp_path / "ws")
    result = runner.invoke(app, ["ingest", str(synthetic_flight), "--workspace", workspace, "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "visible + thermal pairs" in result.output
    status = runner.invoke(app, ["status", "--workspace", workspace])
    assert status.exit_code == 0 and "captures" in status.output
    lines = runner.invoke(app, ["manifest", "--workspace", workspace, "--json"]).stdout.splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 4
    required = {"capture_id", "sequence", "timestamp", "frames", "exif", "xmp", "thermal_raw", "issues"}
    assert required <= set(records[0])
    assert {"path", "sha256", "width", "height"} <= set(records[0]["frames"]["W"])
    assert {"make", "model", "datetime", "focal_length_mm", "gps_latitude", "gps_longitude"} <= set(records[0]["exif"])
    assert {"path", "shape", "dtype", "min", "max"} <= set(records[0]["thermal_raw"])
    assert records[0]["exif"]["gps_latitude"] is not None


def test_manifest_redaction_removes_positions_and_serials(synthetic_flight, tmp_path):
    workspace = str(tmp_path / "ws")
    runner.invoke(app, ["ingest", str(synthetic_flight), "--workspace", workspace, "--no-progress"])
    output = runner.invoke(app, ["manifest", "--workspace", workspace, "--json", "--redact"]).stdout
    record = json.loads(output.splitlines()[0])
    assert record["exif"]["gps_latitude"] is None and record["frames"]["W"]["exif"]["gps_longitude"] is None
    assert "GpsLatitude" not in record["xmp"] and "DroneSerialNumber" not in record["frames"]["W"]["xmp"]
    assert "SYNTH-DRONE" not in output and "47.39" not in output


def test_missing_workspace_and_flight_are_clear_errors(tmp_path):
    result = runner.invoke(app, ["status", "--workspace", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "--workspace" in result.output
    result = runner.invoke(app, ["ingest", str(tmp_path / "no-flight"), "--workspace", str(tmp_path / "ws")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_bad_config_names_the_file(tmp_path, synthetic_flight):
    config = tmp_path / "ingest.yaml"
    config.write_text("timestamp_tolerance_s: -3\n")
    result = runner.invoke(app, ["ingest", str(synthetic_flight), "--workspace", str(tmp_path / "ws"),
                                 "--config", str(config)])
    assert result.exit_code == 2 and "ingest.yaml" in result.output and "timestamp_tolerance_s" in result.output


def test_synth_flight_and_report(tmp_path):
    result = runner.invoke(app, ["synth-flight", str(tmp_path / "f"), "--n", "1", "--seed", "2", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "f" / "groundtruth.json").exists()
    workspace = str(tmp_path / "ws")
    runner.invoke(app, ["ingest", str(tmp_path / "f"), "--workspace", workspace, "--no-progress"])
    report = runner.invoke(app, ["report", "--workspace", workspace])
    assert report.exit_code == 0
    page = (tmp_path / "ws" / "reports" / "index.html").read_text()
    assert page.count("data:image/jpeg;base64,") == 2  # the W thumbnail and the raw thermal one


def test_crop_and_align_commands(synthetic_flight, tmp_path):
    workspace = str(tmp_path / "ws")
    runner.invoke(app, ["ingest", str(synthetic_flight), "--workspace", workspace, "--no-progress"])
    crop = runner.invoke(app, ["crop", "--workspace", workspace, "--no-progress"])
    assert crop.exit_code == 0 and "cropped now" in crop.output
    align = runner.invoke(app, ["align", "--workspace", workspace, "--no-progress", "--motion", "translation"])
    assert align.exit_code == 0 and "flight offset" in align.output
    records = [json.loads(l) for l in runner.invoke(app, ["manifest", "-w", workspace, "--json"]).stdout.splitlines()]
    assert {r["stages"]["crop"]["status"] for r in records} == {"done"}
    assert {r["stages"]["align"]["status"] for r in records} == {"done"}
    bad = runner.invoke(app, ["crop", "--workspace", workspace, "--size", "big"])
    assert bad.exit_code == 2 and "WIDTHxHEIGHT" in bad.output
    bad = runner.invoke(app, ["align", "--workspace", workspace, "--motion", "affine"])
    assert bad.exit_code == 2 and "motion" in bad.output


def stage_report(planned, done=0, skipped=0, failed=0, not_run=0):
    from types import SimpleNamespace

    assert planned == done + skipped + failed + not_run
    return SimpleNamespace(planned=planned, done=done, skipped=skipped, failed=failed, not_run=not_run,
                           incomplete=not_run > 0, notices=[])


@pytest.mark.parametrize("report, line", [
    (stage_report(24, done=20, skipped=4), None),
    (stage_report(24, done=23, failed=1),
     "1 of 24 align tasks failed (`ums status --issues` lists why; rerun `ums align` to retry them)"),
    (stage_report(24, failed=24), "all 24 align tasks failed (`ums status --issues` lists why; rerun `ums align` to retry them)"),
    (stage_report(24, done=10, not_run=14), "14 of 24 align tasks were not run (rerun `ums align` to resume)"),
    (stage_report(24, done=10, failed=2, not_run=12),
     "2 of 24 align tasks failed and 12 were not run (`ums status --issues` lists why; rerun `ums align` to retry and resume them)"),
    (stage_report(0), "nothing to align: no capture is ready for it (run `ums crop` first)"),
])
def test_a_run_ends_with_its_real_counts(report, line):
    from ums.cli import _shortfall

    assert _shortfall(report, "align") == line


def test_a_partial_failure_exits_1_with_one_line(capsys):
    import typer

    from ums.cli import _finish

    with pytest.raises(typer.Exit) as ended:
        _finish(stage_report(24, done=23, failed=1), "crop")
    assert ended.value.exit_code == 1
    assert capsys.readouterr().err == ("error: 1 of 24 crop tasks failed (`ums status --issues` lists why; rerun `ums crop` "
                                       "to retry them)\n")
    _finish(stage_report(3, done=1, skipped=2), "crop")  # all done or skipped: no exit


def test_a_config_files_executor_section_says_where_the_stage_runs_and_an_option_wins(synthetic_flight, tmp_path):
    import cv2

    from ums.core.workspace import Workspace

    workspace = str(tmp_path / "ws")
    runner.invoke(app, ["ingest", str(synthetic_flight), "--workspace", workspace, "--no-progress", "--workers", "1"])
    config = tmp_path / "crop.yaml"
    config.write_text("output_width: 320\noutput_height: 256\nexecutor:\n  workers: 2\n  dashboard: false\n")
    crop = runner.invoke(app, ["crop", "--workspace", workspace, "--config", str(config), "--workers", "1", "--no-progress"])
    assert crop.exit_code == 0, crop.output
    with Workspace.open(workspace, create=False) as ws:
        [run] = ws.runs("crop")
        vis = {cv2.imread(str(ws.absolute(ws.stage_result(c.capture_id, "crop")["files"]["vis"]))).shape for c in ws.captures()}
    assert vis == {(256, 320, 3)}
    recorded = json.loads(run["config_json"])
    assert (recorded["output_width"], recorded["output_height"]) == (320, 256) and "workers" not in recorded
    assert recorded["executor"] == {"workers": 1, "executor": "local", "scheduler": None, "scheduler_file": None,
                                    "show_progress": False, "dashboard": False}
