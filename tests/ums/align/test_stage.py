from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from ums.align.stage import AlignConfig, align_workspace, decide
from ums.camera import apply_homography
from ums.crop import CropConfig, crop_workspace
from ums.core.executors import ExecutorSettings
from ums.ingest import IngestConfig, ingest_flight
from ums.manifest import manifest_records
from ums.core.stamps import stamp
from ums.core.workspace import Workspace

QUIET = ExecutorSettings(show_progress=False)
IN_PROCESS = ExecutorSettings(show_progress=False, workers=1)
GRID = np.stack(np.meshgrid(np.arange(0, 640, 16), np.arange(0, 512, 16)), -1).reshape(-1, 2).astype(float)


def aligned_workspace(flight, path, config=None):
    ws = Workspace.open(path)
    ingest_flight(ws, flight, IngestConfig(), QUIET)
    crop_workspace(ws, CropConfig(), QUIET)
    return ws, align_workspace(ws, config, QUIET)


def residual_px(ws, capture, transform, truth) -> float:
    """Mean distance on the output grid between where we sample the wide frame and where the truth does."""
    crop = ws.stage_results(capture.capture_id)["crop"]
    crop_map = np.array(crop["thermal_to_visible"]) @ np.array(crop["output_to_thermal"])
    ours = apply_homography(crop_map @ np.asarray(transform), GRID)
    expected = apply_homography(np.array(truth["thermal_to_wide"]), GRID)
    back = np.linalg.inv(crop_map)  # measure in output (thermal) pixels
    return float(np.linalg.norm(apply_homography(back, ours) - apply_homography(back, expected), axis=1).mean())


def test_synthetic_flight_aligns_below_half_a_pixel(synthetic_flight, tmp_path):
    ws, report = aligned_workspace(synthetic_flight, tmp_path / "ws", AlignConfig(min_confident_frames=3))
    truth = {c["sequence"]: c for c in json.loads((synthetic_flight / "groundtruth.json").read_text())["captures"]}
    assert report.frame == 4 and report.failed == 0 and not report.issues
    offset = report.offsets[str(synthetic_flight.resolve())]
    for capture in ws.captures():
        result = ws.stage_results(capture.capture_id)["align"]
        before = residual_px(ws, capture, np.eye(3), truth[capture.sequence])
        after = residual_px(ws, capture, result["transform"], truth[capture.sequence])
        assert before > 2.0 and after < 0.5, (before, after)
        # the per-flight rig offset is within 0.3 px of the truth on every frame
        assert residual_px(ws, capture, offset, truth[capture.sequence]) < 0.3
        assert cv2.imread(str(ws.absolute(result["files"]["overlay"]))).shape == (512, 640, 3)
    records = list(manifest_records(ws))
    assert all(r["stages"]["align"]["decision"] == "frame" and not r["stages"]["align"]["flagged"] for r in records)
    ws.close()


def test_rerun_reuses_estimates(synthetic_flight, tmp_path):
    ws, first = aligned_workspace(synthetic_flight, tmp_path / "ws")
    again = align_workspace(ws, executor=QUIET)
    assert again.reused == 4 and again.frame == first.frame
    ws.close()


def test_featureless_frame_falls_back_to_the_flight_offset(synthetic_flight, tmp_path):
    ws = Workspace.open(tmp_path / "ws")
    ingest_flight(ws, synthetic_flight, IngestConfig(), QUIET)
    crop_workspace(ws, CropConfig(), QUIET)
    night = ws.captures()[1]
    vis_path = ws.absolute(ws.stage_results(night.capture_id)["crop"]["files"]["vis"])
    cv2.imwrite(str(vis_path), np.full((512, 640, 3), 7, np.uint8))  # a black night frame
    restamp_crop(ws, night.capture_id)  # as if crop had written it
    report = align_workspace(ws, AlignConfig(min_confident_frames=3), QUIET)
    result = ws.stage_results(night.capture_id)["align"]
    assert result["decision"] == "flight_offset" and "failed" in result["reason"]
    assert report.frame == 3 and report.flight_offset == 1
    # with too few confident frames for an offset the frame fails, recorded and never "aligned"
    report = align_workspace(ws, AlignConfig(min_confident_frames=4), QUIET)
    assert report.failed == 1 and "no structure" in report.issues[0].message
    assert ws.stage_results(night.capture_id)["align"]["status"] == "failed"
    ws.close()


def restamp_crop(ws: Workspace, capture_id: str) -> None:
    crop = ws.stage_result(capture_id, "crop")
    status = crop.pop("status")
    crop["outputs"] = {path: stamp(ws.absolute(path)).model_dump() for path in crop["outputs"]}
    ws.record_stage_result(capture_id, "crop", status, crop)


def test_a_truncated_crop_output_fails_its_frame_only_and_heals_with_crop_then_align(synthetic_flight, tmp_path):
    ws, first = aligned_workspace(synthetic_flight, tmp_path / "ws")
    flight = str(synthetic_flight.resolve())
    damaged = ws.captures()[2].capture_id
    vis = ws.absolute(ws.stage_result(damaged, "crop")["files"]["vis"])
    vis.write_bytes(vis.read_bytes()[:1000])
    ws.record_outcome(damaged, "align", "failed", {"fingerprint": "", "reason": "forced redo"}, [])
    offsets = []
    for _ in range(2):  # the same answer twice: nothing new, nothing changes
        report = align_workspace(ws, executor=QUIET)
        assert (report.planned, report.frame + report.flight_offset + report.unconfident, report.failed) == (4, 3, 1)
        assert report.planned == report.done + report.skipped + report.failed + report.not_run
        offsets.append(report.offsets[flight])
        [issue] = report.issues
        assert issue.capture_id == damaged and "ums crop" in issue.message and "truncated" in issue.message
        assert ws.stage_result(damaged, "align")["status"] == "failed"
    recropped = crop_workspace(ws, CropConfig(), QUIET)
    assert (recropped.done, recropped.skipped) == (1, 3)
    healed = align_workspace(ws, executor=QUIET)
    assert offsets[0] == offsets[1]
    assert (healed.failed, healed.done + healed.skipped, healed.issues) == (0, 4, [])
    assert healed.offsets[flight] == first.offsets[flight]  # the frame's estimate counts again
    assert ws.stage_result(damaged, "align")["status"] == "done"
    ws.close()


def test_a_registration_that_raises_is_failed_not_kept_and_the_rerun_retries_it(synthetic_flight, tmp_path, monkeypatch):
    from ums.align import stage

    ws = Workspace.open(tmp_path / "ws")
    ingest_flight(ws, synthetic_flight, IngestConfig(), QUIET)
    crop_workspace(ws, CropConfig(), QUIET)
    real_register, calls = stage.register, []

    def register_once_out_of_memory(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise MemoryError("cannot allocate 2.1 GB")
        return real_register(*args, **kwargs)

    monkeypatch.setattr(stage, "register", register_once_out_of_memory)
    report = align_workspace(ws, executor=IN_PROCESS)  # in this process, where the patch is
    assert (report.planned, report.done, report.failed) == (4, 3, 1)
    [issue] = report.issues
    assert "unexpected MemoryError: cannot allocate 2.1 GB" in issue.message and "rerun `ums align`" in issue.message
    failed = issue.capture_id
    assert "estimate" not in ws.stage_result(failed, "align")  # never taken for a registration that failed
    again = align_workspace(ws, executor=IN_PROCESS)
    assert (again.failed, again.reused, again.done + again.skipped) == (0, 3, 4)
    assert ws.stage_result(failed, "align")["decision"] == "frame"
    ws.close()


OFFSET = [[1.0, 0.0, 2.0], [0.0, 1.0, -1.0], [0.0, 0.0, 1.0]]


def estimate(tx, ty, score=0.5, converged=True):
    return {"ok": True, "transform": [[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]], "score": score,
            "converged": converged}


@pytest.mark.parametrize(
    "frame, offset, decision, flagged",
    [
        (estimate(2.2, -0.8), OFFSET, "frame", False),
        (estimate(12.0, -0.8), OFFSET, "flight_offset", False),  # too far from the rig offset
        (estimate(2.2, -0.8, score=0.1), OFFSET, "flight_offset", False),
        (estimate(2.2, -0.8, converged=False), OFFSET, "flight_offset", False),
        (estimate(2.2, -0.8, score=0.1), None, "unconfident", True),
        ({"ok": False, "reason": "no structure"}, OFFSET, "flight_offset", False),
        ({"ok": False, "reason": "no structure"}, None, "failed", True),
    ],
)
def test_decisions(frame, offset, decision, flagged):
    result = decide(frame, offset, AlignConfig())
    assert (result.decision, result.flagged) == (decision, flagged)
    assert result.reason


def test_a_frame_takes_its_flights_scale_about_its_centre():
    """Own similarity with scale 1.01 and a flight scale of 1.0: the centre maps where it did, the
    corners move by the scale difference, and the rotation is the frame's own."""
    from ums.align.stage import with_scale

    angle = 0.01
    own = np.array([[1.01 * np.cos(angle), -1.01 * np.sin(angle), 3.0], [1.01 * np.sin(angle), 1.01 * np.cos(angle), -2.0], [0, 0, 1]])
    fixed = with_scale(own.tolist(), OFFSET, (640, 512))
    centre = np.array([[319.5, 255.5]])
    assert np.allclose(apply_homography(np.array(fixed), centre), apply_homography(own, centre))
    linear = np.array(fixed)[:2, :2]
    assert np.isclose(np.hypot(*linear[:, 0]), 1.0) and np.isclose(np.arctan2(linear[1, 0], linear[0, 0]), angle)
    decided = decide({"ok": True, "transform": own.tolist(), "score": 0.5}, OFFSET, AlignConfig(), (640, 512))
    assert decided.decision == "frame" and np.allclose(decided.transform, fixed)
    assert np.allclose(decide({"ok": True, "transform": own.tolist(), "score": 0.5}, OFFSET,
                              AlignConfig(flight_scale=False), (640, 512)).transform, own)


def _flight_of(scales: list[float]) -> tuple[list[tuple[str, str]], dict]:
    from ums.core.records import AlignEstimate

    estimates = {f"c{i}": AlignEstimate(ok=True, score=0.6, transform=[[s, 0.0, 2.0], [0.0, s, -1.0], [0, 0, 1]])
                 for i, s in enumerate(scales)}
    return [(key, "flight") for key in estimates], estimates


def test_a_flight_scale_within_its_frames_noise_is_one_and_a_real_one_is_kept():
    """Frames scattered +-0.002 about a median 0.9994 (the synthetic flight's case: the truth is 1)
    give scale 1; the same scatter about 1.006 (a rig whose focal lengths are off) keeps 1.006."""
    from ums.align.stage import flight_offsets, scale_spread

    scatter = np.random.default_rng(3).normal(0, 0.002, 24)
    scatter -= np.median(scatter)
    frames, estimates = _flight_of(list(0.9994 + scatter))
    assert 0.0003 < scale_spread(list(0.9994 + scatter)) < 0.0008  # ~1.25 x 0.002 / sqrt(24)
    assert flight_offsets(frames, estimates, AlignConfig())["flight"][0][0] == 1.0
    assert np.isclose(flight_offsets(frames, estimates, AlignConfig(min_scale_sigmas=0))["flight"][0][0], 0.9994)
    frames, estimates = _flight_of(list(1.006 + scatter))
    assert np.isclose(flight_offsets(frames, estimates, AlignConfig())["flight"][0][0], 1.006)


def test_the_learned_cascade_runs_as_a_stage(synthetic_flight, tmp_path):
    """A refiner (random weights, exported as the package ships them) behind ECC: every frame gets
    ECC's global fit for the flight offset, its decision says what the refiner did, and a refined
    frame's dense flow is what its aligned image was warped with."""
    import torch

    from ums.align.learned.checkpoint import export_refiner, save_checkpoint
    from ums.align.learned.refiner import ResidualRefiner

    torch.manual_seed(0)
    weights = export_refiner(save_checkpoint(ResidualRefiner(width=0.5), tmp_path / "r.pt", {}), tmp_path / "r.safetensors")
    config = AlignConfig(method="learned", weights=weights, min_consistent=0.0)
    ws, report = aligned_workspace(synthetic_flight, tmp_path / "ws", config)
    assert report.failed == 0 and report.frame == 4
    assert report.offsets[str(synthetic_flight.resolve())] is not None  # built from the global fits
    for capture in ws.captures():
        result = ws.stage_results(capture.capture_id)["align"]
        assert result["estimate"]["transform"] and "refine" in result["estimate"]["refinement"]
        assert "refine" in result["reason"]
        if result.get("flow"):
            flow = np.load(ws.absolute(result["flow"]))
            assert flow.shape == (512, 640, 2)
    assert align_workspace(ws, config).reused == 4  # same weights file: estimates kept
    ws.close()
