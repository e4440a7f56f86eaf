from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ums.align import register
from ums.align.deformation import FieldRange
from ums.align.flow import warp_with_flow
from ums.align.learned.model import DenseMatcher
from ums.align.learned.checkpoint import load_matcher, training_state_path
from ums.align.learned.train import AlignTrainConfig, PairSampler, load_pairs, losses, train_registration
from ums.cli import app




@pytest.mark.slow
@pytest.mark.parametrize("readout", ["soft-argmax", "regress"])
def test_one_batch_is_learned(pair_folder, readout):
    """Gradients reach every block: the net fits one fixed batch of warps."""
    torch.manual_seed(0)
    sampler = PairSampler(load_pairs([pair_folder]), 64, seed=0)
    sampler.regimes = [FieldRange(rotation_deg=0, scale=0, translation_px=5, elastic_px=0)] * 2
    batch = sampler.batch(4, torch.device("cpu"))
    model = DenseMatcher(width=0.25, readout=readout)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    config = AlignTrainConfig(pairs=[pair_folder], out=pair_folder / "unused.pt")
    history = []
    for _ in range(60):
        terms = losses(model, batch, config)
        optimiser.zero_grad()
        terms["total"].backward()
        optimiser.step()
        history.append(float(terms["epe"].detach()))
    assert np.mean(history[-5:]) < np.mean(history[:5]) / 4


def test_samples_depend_on_seed_step_and_index_only(pair_folder):
    """Threads give the very batch one thread gives; another step gives another batch; the fixed
    crop is the full frame's warp seen through the window (the truth keeps its values)."""
    pairs = load_pairs([pair_folder])
    alone = PairSampler(pairs, 64, seed=3).batch(6, torch.device("cpu"), step=5)
    threaded = PairSampler(pairs, 64, seed=3, threads=3).batch(6, torch.device("cpu"), step=5)
    for key in alone:
        assert torch.equal(alone[key], threaded[key]), key
    other = PairSampler(pairs, 64, seed=3).batch(6, torch.device("cpu"), step=6)
    assert not torch.equal(alone["truth"], other["truth"])
    sampler = PairSampler(pairs, 64, seed=3)
    rng = np.random.default_rng(11)
    fixed, _, ir, truth = sampler.sample(rng)
    assert np.abs(truth).max() > 0.5  # this draw is a real warp, not the 10 % zero field
    frame = sampler.images[np.random.default_rng(11).integers(len(sampler.images))][0]
    flipped = np.random.default_rng(11)
    flipped.integers(len(sampler.images))
    frame = np.ascontiguousarray(frame[:, ::-1]) if flipped.random() < 0.5 else frame
    found = [(y, x) for y in range(frame.shape[0] - 63) for x in range(frame.shape[1] - 63)
             if np.array_equal(frame[y:y + 64, x:x + 64], ir)]
    assert len(found) == 1
    y, x = found[0]
    full_truth = np.zeros(frame.shape + (2,), np.float32)
    full_truth[y:y + 64, x:x + 64] = truth
    assert np.allclose(fixed, warp_with_flow(frame, full_truth)[y:y + 64, x:x + 64], atol=1e-6)


def test_training_writes_a_checkpoint_that_register_uses(pair_folder, tmp_path):
    out = tmp_path / "matcher.pt"
    history = train_registration(AlignTrainConfig(pairs=[pair_folder], out=out, model="dense", width=0.25, crop=64,
                                                  batch=2, steps=3, show_progress=False))
    assert len(history) == 3 and all(np.isfinite(h["total"]) for h in history)
    assert out.exists() and out.with_suffix(".loss.png").exists()
    assert len(json.loads(out.with_suffix(".history.json").read_text())) == 3
    assert training_state_path(out).exists()
    model = load_matcher(out)
    assert model.config == {"width": 0.25, "readout": "soft-argmax"} and not model.training
    fixed = cv2.imread(str(pair_folder / "ir" / "0.png"), cv2.IMREAD_GRAYSCALE)
    moving = cv2.imread(str(pair_folder / "vi" / "0.png"))
    registration = register(fixed, moving, method="learned", weights=out)
    assert registration.flow.shape == (128, 160, 2) and registration.transform is None
    assert 0.0 <= registration.score <= 1.0


def _tiny(pair_folder, out, **overrides):
    settings = dict(pairs=[pair_folder], out=out, model="dense", width=0.25, crop=64, batch=2, steps=4, show_progress=False)
    return AlignTrainConfig(**{**settings, **overrides})


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
    for name, tensor in load_matcher(straight).state_dict().items():
        assert torch.equal(tensor, load_matcher(interrupted).state_dict()[name]), name


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
    for name, tensor in load_matcher(straight).state_dict().items():
        assert torch.equal(tensor, load_matcher(sliced).state_dict()[name]), name


def test_resume_refuses_other_settings_and_missing_state(pair_folder, tmp_path):
    out = tmp_path / "m.pt"
    with pytest.raises(FileNotFoundError, match="no training state"):
        train_registration(_tiny(pair_folder, out, resume=True))
    train_registration(_tiny(pair_folder, out, steps=1))
    with pytest.raises(ValueError, match=r"other settings \(crop, width\)"):
        train_registration(_tiny(pair_folder, out, resume=True, width=0.5, crop=72))
    with pytest.raises(ValueError, match=r"other settings \(readout\)"):
        train_registration(_tiny(pair_folder, out, resume=True, readout="regress"))


def test_states_from_before_the_readout_option_resume_as_published(pair_folder, tmp_path):
    out = tmp_path / "m.pt"
    train_registration(_tiny(pair_folder, out, steps=1, readout="regress"))
    state = torch.load(training_state_path(out), weights_only=True)
    identity = json.loads(state["identity"])
    del identity["readout"]
    torch.save({**state, "identity": json.dumps(identity)}, training_state_path(out))
    with pytest.raises(ValueError, match=r"other settings \(readout\)"):
        train_registration(_tiny(pair_folder, out, resume=True))
    history = train_registration(_tiny(pair_folder, out, resume=True, readout="regress"))
    assert [h["step"] for h in history] == [0, 1, 2, 3]


def test_held_out_validation_scores_the_benchmark_warps(pair_folder, tmp_path):
    """Validated steps carry the held-out median EPE; an untrained net scores like no registration
    (the drone-like warps move pixels by several px), a net that outputs the truth would score 0."""
    out = tmp_path / "m.pt"
    history = train_registration(_tiny(pair_folder, out, steps=3, val_pairs=[pair_folder], val_every=2, val_fields=1))
    validated = [h for h in history if "val_epe_median" in h]
    assert [h["step"] for h in validated] == [1, 2]  # after step 2 (every 2) and after the last
    assert all(1.0 < h["val_epe_median"] < 40.0 for h in validated)
    record = torch.load(out, weights_only=True)["training"]
    assert [v["step"] for v in record["validations"]] == [1, 2]


def test_bad_weights_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="--weights"):
        load_matcher(None)
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_matcher(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        load_matcher(junk)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ValueError, match="not a dense-matcher checkpoint"):
        load_matcher(foreign)


def test_checkpoints_from_before_the_readout_option_load_as_published(tmp_path):
    """Version-1 checkpoints recorded only the width: they hold the published (regress) readout."""
    torch.manual_seed(0)
    published = DenseMatcher(width=0.25, readout="regress")
    path = tmp_path / "old.pt"
    torch.save({"format": "ums-dense-matcher", "version": 1, "config": {"width": 0.25}, "training": {},
                "state_dict": published.state_dict()}, path)
    loaded = load_matcher(path)
    assert loaded.config == {"width": 0.25, "readout": "regress"}
    fixed, moving = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(fixed, moving), published.eval()(fixed, moving))


def test_cli_train_then_align_with_the_learned_method(pair_folder, synthetic_flight, tmp_path):
    runner = CliRunner()
    weights = tmp_path / "m.pt"
    trained = runner.invoke(app, ["align-train", "--model", "dense", "--pairs", str(pair_folder), "--out", str(weights),
                                  "--steps", "2", "--batch", "2", "--crop", "64", "--width", "0.25", "--no-progress"])
    assert trained.exit_code == 0, trained.output
    workspace = str(tmp_path / "ws")
    runner.invoke(app, ["ingest", str(synthetic_flight), "-w", workspace, "--no-progress"])
    runner.invoke(app, ["crop", "-w", workspace, "--no-progress"])
    missing = runner.invoke(app, ["align", "-w", workspace, "--method", "learned", "--weights", str(tmp_path / "no.pt"),
                                  "--no-progress"])
    assert missing.exit_code == 2 and "--weights" in missing.output
    shipped = runner.invoke(app, ["align", "-w", workspace, "--method", "learned", "--no-progress"])
    assert shipped.exit_code == 0, shipped.output  # no --weights: the cascade with the refiner ums ships
    records = [json.loads(line) for line in runner.invoke(app, ["manifest", "-w", workspace, "--json"]).stdout.splitlines()]
    assert all(record["stages"]["align"]["estimate"]["refinement"] for record in records)
    aligned = runner.invoke(app, ["align", "-w", workspace, "--method", "learned", "--weights", str(weights),
                                  "--no-progress"])
    assert aligned.exit_code == 0, aligned.output
    records = [json.loads(line) for line in runner.invoke(app, ["manifest", "-w", workspace, "--json"]).stdout.splitlines()]
    for record in records:
        result = record["stages"]["align"]
        assert result["status"] == "done" and "flow" in result["estimate"]
        # an untrained net is rarely confident: such frames are flagged, never silently aligned
        assert result["decision"] in {"frame", "unconfident"}
        assert result["flagged"] == (result["decision"] == "unconfident")


def test_cli_validates_and_resumes(pair_folder, tmp_path):
    runner = CliRunner()
    weights = tmp_path / "m.pt"
    common = ["align-train", "--pairs", str(pair_folder), "--out", str(weights), "--batch", "2", "--crop", "64",
              "--width", "0.25", "--val-pairs", str(pair_folder), "--no-progress"]
    first = runner.invoke(app, common + ["--steps", "2"])
    assert first.exit_code == 0, first.output
    assert "held-out drone-like warps: median EPE" in first.output
    resumed = runner.invoke(app, common + ["--steps", "3", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "trained to step 3" in resumed.output
    assert torch.load(weights, weights_only=True)["training"]["steps"] == 3
    refused = runner.invoke(app, common + ["--steps", "4", "--resume", "--crop", "72"])
    assert refused.exit_code == 2 and "other settings (crop)" in refused.output
