"""``ums align-train``: the residual refiner's training run writes what ``--weights`` reads, resumes
exactly, refuses a state of other settings or of another net, and scores held-out pairs."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ums.align import register
from tests.ums.align.learned.conftest import dense_checkpoint
from ums.align.learned.checkpoint import load_refiner, training_state_path
from ums.align.learned.train import AlignTrainConfig, train_registration
from ums.cli import app


def _tiny(pair_folder, out, **overrides):
    settings = dict(pairs=[pair_folder], out=out, width=0.25, crop=64, batch=2, steps=4, show_progress=False)
    return AlignTrainConfig(**{**settings, **overrides})


def _same_weights(first, second):
    for name, tensor in load_refiner(first).state_dict().items():
        assert torch.equal(tensor, load_refiner(second).state_dict()[name]), name


@pytest.mark.slow
def test_training_writes_a_checkpoint_that_register_uses(pair_folder, tmp_path):
    out = tmp_path / "refiner.pt"
    history = train_registration(_tiny(pair_folder, out, steps=3))
    assert [h["step"] for h in history] == [0, 1, 2] and all(np.isfinite(h["total"]) for h in history)
    assert out.exists() and out.with_suffix(".loss.png").exists() and out.with_suffix(".safetensors").exists()
    assert len(json.loads(out.with_suffix(".history.json").read_text())) == 3
    assert training_state_path(out).exists()
    model = load_refiner(out)
    assert model.config == {"width": 0.25, "radius": 2, "half_radius": 1, "spread": 8.0} and not model.training
    _same_weights(out, out.with_suffix(".safetensors"))
    fixed = cv2.imread(str(pair_folder / "ir" / "0.png"), cv2.IMREAD_GRAYSCALE)
    moving = cv2.imread(str(pair_folder / "vi" / "0.png"))
    registration = register(fixed, moving, method="learned", weights=out, min_consistent=0.0)
    assert registration.flow.shape == (128, 160, 2) and registration.method == "learned"
    assert registration.details["refinement"]  # what the refiner did: refined, or why ECC's fit was kept


@pytest.mark.slow
def test_resume_continues_exactly(pair_folder, tmp_path):
    """Two steps, stop, two more from the saved state == four in one go, to the last bit."""
    straight = tmp_path / "straight.pt"
    train_registration(_tiny(pair_folder, straight))
    interrupted = tmp_path / "interrupted.pt"
    train_registration(_tiny(pair_folder, interrupted, steps=2))
    history = train_registration(_tiny(pair_folder, interrupted, resume=True))
    assert [h["step"] for h in history] == [0, 1, 2, 3]
    expected = json.loads(straight.with_suffix(".history.json").read_text())
    assert [h["total"] for h in history] == [h["total"] for h in expected]
    _same_weights(straight, interrupted)


@pytest.mark.slow
def test_time_sliced_training_equals_one_run(pair_folder, tmp_path):
    """--max-seconds stops after the step in progress, keeping the schedule of all --steps; slices
    resumed one after another end where one uninterrupted run ends."""
    straight = tmp_path / "straight.pt"
    train_registration(_tiny(pair_folder, straight, steps=3))
    sliced = tmp_path / "sliced.pt"
    first = train_registration(_tiny(pair_folder, sliced, steps=3, max_seconds=1e-6))
    assert len(first) == 1 and torch.load(sliced, weights_only=True)["training"]["steps"] == 1
    train_registration(_tiny(pair_folder, sliced, steps=3, max_seconds=1e-6, resume=True))
    final = train_registration(_tiny(pair_folder, sliced, steps=3, resume=True))
    assert [h["step"] for h in final] == [0, 1, 2]
    _same_weights(straight, sliced)


@pytest.mark.slow
def test_resume_refuses_other_settings_another_net_and_missing_state(pair_folder, tmp_path):
    out = tmp_path / "m.pt"
    with pytest.raises(FileNotFoundError, match="no training state"):
        train_registration(_tiny(pair_folder, out, resume=True))
    train_registration(_tiny(pair_folder, out, steps=1))
    with pytest.raises(ValueError, match=r"other settings \(crop, width\)"):
        train_registration(_tiny(pair_folder, out, resume=True, width=0.5, crop=72))
    with pytest.raises(ValueError, match=r"other settings \(spread\)"):
        train_registration(_tiny(pair_folder, out, resume=True, spread=4.0))
    state = torch.load(training_state_path(out), weights_only=True)
    identity = {**json.loads(state["identity"]), "model": "dense"}
    torch.save({**state, "identity": json.dumps(identity)}, training_state_path(out))
    with pytest.raises(ValueError, match=r"the training state of another net \(dense, not the refiner\)"):
        train_registration(_tiny(pair_folder, out, resume=True))


@pytest.mark.slow
def test_held_out_validation_scores_residual_fields(pair_folder, tmp_path):
    """Validated steps carry the held-out median EPE of the forward residual; an untrained net is
    no better than predicting nothing (residual fields of up to a few px RMS)."""
    out = tmp_path / "m.pt"
    history = train_registration(_tiny(pair_folder, out, steps=3, val_pairs=[pair_folder], val_every=2, val_fields=1))
    validated = [h for h in history if "val_epe_median" in h]
    assert [h["step"] for h in validated] == [1, 2]  # after step 2 (every 2) and after the last
    assert all(0.2 < h["val_epe_median"] < 6.0 for h in validated)
    record = torch.load(out, weights_only=True)["training"]
    assert [v["step"] for v in record["validations"]] == [1, 2]


def test_the_settings_have_no_other_net():
    """The dense matcher and its settings are research code in bench/ (docs/registration.md)."""
    assert not {"model", "readout", "translation_px"} & set(AlignTrainConfig.model_fields)
    with pytest.raises(ValueError, match="model"):
        AlignTrainConfig(pairs=["p"], out="m.pt", model="dense")


def _manifest(runner, workspace):
    listing = runner.invoke(app, ["manifest", "-w", workspace, "--json"]).stdout
    return [json.loads(line) for line in listing.splitlines()]


@pytest.mark.slow
def test_cli_train_then_align_with_the_learned_method(pair_folder, synthetic_flight, tmp_path):
    runner = CliRunner()
    weights = tmp_path / "m.pt"
    trained = runner.invoke(app, ["align-train", "--pairs", str(pair_folder), "--out", str(weights), "--steps", "2",
                                  "--batch", "2", "--crop", "64", "--width", "0.25", "--no-progress"])
    assert trained.exit_code == 0, trained.output
    workspace = str(tmp_path / "ws")
    runner.invoke(app, ["ingest", str(synthetic_flight), "-w", workspace, "--no-progress"])
    runner.invoke(app, ["crop", "-w", workspace, "--no-progress"])
    missing = runner.invoke(app, ["align", "-w", workspace, "--method", "learned", "--weights", str(tmp_path / "no.pt"),
                                  "--no-progress"])
    assert missing.exit_code == 2 and "--weights" in missing.output
    dense = dense_checkpoint(tmp_path / "dense.pt")
    refused = runner.invoke(app, ["align", "-w", workspace, "--method", "learned", "--weights", str(dense),
                                  "--no-progress"])
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    lines = [line for line in refused.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --weights") and "research code in bench/" in lines[0]
    shipped = runner.invoke(app, ["align", "-w", workspace, "--method", "learned", "--no-progress"])
    assert shipped.exit_code == 0, shipped.output  # no --weights: the cascade with the refiner ums ships
    records = _manifest(runner, workspace)
    assert all(record["stages"]["align"]["estimate"]["refinement"] for record in records)
    aligned = runner.invoke(app, ["align", "-w", workspace, "--method", "learned", "--weights", str(weights),
                                  "--no-progress"])
    assert aligned.exit_code == 0, aligned.output
    records = _manifest(runner, workspace)
    for record in records:
        result = record["stages"]["align"]
        assert result["status"] == "done" and result["estimate"]["refinement"]
        assert result["decision"] in {"frame", "unconfident"}
        assert result["flagged"] == (result["decision"] == "unconfident")


@pytest.mark.slow
def test_cli_validates_and_resumes(pair_folder, tmp_path):
    runner = CliRunner()
    weights = tmp_path / "m.pt"
    common = ["align-train", "--pairs", str(pair_folder), "--out", str(weights), "--batch", "2", "--crop", "64",
              "--width", "0.25", "--val-pairs", str(pair_folder), "--no-progress"]
    first = runner.invoke(app, common + ["--steps", "2"])
    assert first.exit_code == 0, first.output
    assert "median EPE" in first.output
    resumed = runner.invoke(app, common + ["--steps", "3", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "trained to step 3" in resumed.output
    assert torch.load(weights, weights_only=True)["training"]["steps"] == 3
    refused = runner.invoke(app, common + ["--steps", "4", "--resume", "--crop", "72"])
    assert refused.exit_code == 2 and "other settings (crop)" in refused.output
