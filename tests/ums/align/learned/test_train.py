from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ums.align import register
from ums.align.deformation import FieldRange
from ums.align.learned.model import DenseMatcher
from ums.align.learned.train import AlignTrainConfig, PairSampler, load_matcher, load_pairs, losses, train_registration
from ums.cli import app


@pytest.fixture(scope="module")
def pair_folder(tmp_path_factory):
    """Six aligned 'pairs' made by the test: a textured image and its inverted, blurred twin."""
    root = tmp_path_factory.mktemp("pairs")
    (root / "ir").mkdir()
    (root / "vi").mkdir()
    rng = np.random.default_rng(4)
    for index in range(6):
        texture = cv2.resize(rng.integers(0, 255, (24, 32), dtype=np.uint8), (160, 128), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(root / "vi" / f"{index}.png"), cv2.cvtColor(texture, cv2.COLOR_GRAY2BGR))
        cv2.imwrite(str(root / "ir" / f"{index}.png"), cv2.GaussianBlur(255 - texture, (0, 0), 1.0))
    return root


def test_one_batch_is_learned(pair_folder):
    """Gradients reach every block: the net fits one fixed batch of warps."""
    torch.manual_seed(0)
    sampler = PairSampler(load_pairs([pair_folder]), 64, np.random.default_rng(0))
    sampler.regimes = [FieldRange(rotation_deg=0, scale=0, translation_px=5, elastic_px=0)] * 2
    batch = sampler.batch(4, torch.device("cpu"))
    model = DenseMatcher(width=0.25)
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


def test_training_writes_a_checkpoint_that_register_uses(pair_folder, tmp_path):
    out = tmp_path / "matcher.pt"
    history = train_registration(AlignTrainConfig(pairs=[pair_folder], out=out, width=0.25, crop=64, batch=2,
                                                  steps=3, show_progress=False))
    assert len(history) == 3 and all(np.isfinite(h["total"]) for h in history)
    assert out.exists() and out.with_suffix(".loss.png").exists()
    assert len(json.loads(out.with_suffix(".history.json").read_text())) == 3
    model = load_matcher(out)
    assert model.config == {"width": 0.25} and not model.training
    fixed = cv2.imread(str(pair_folder / "ir" / "0.png"), cv2.IMREAD_GRAYSCALE)
    moving = cv2.imread(str(pair_folder / "vi" / "0.png"))
    registration = register(fixed, moving, method="learned", weights=out)
    assert registration.flow.shape == (128, 160, 2) and registration.transform is None
    assert 0.0 <= registration.score <= 1.0


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


def test_cli_train_then_align_with_the_learned_method(pair_folder, synthetic_flight, tmp_path):
    runner = CliRunner()
    weights = tmp_path / "m.pt"
    trained = runner.invoke(app, ["align-train", "--pairs", str(pair_folder), "--out", str(weights), "--steps", "2",
                                  "--batch", "2", "--crop", "64", "--width", "0.25", "--no-progress"])
    assert trained.exit_code == 0, trained.output
    workspace = str(tmp_path / "ws")
    runner.invoke(app, ["ingest", str(synthetic_flight), "-w", workspace, "--no-progress"])
    runner.invoke(app, ["crop", "-w", workspace, "--no-progress"])
    missing = runner.invoke(app, ["align", "-w", workspace, "--method", "learned", "--no-progress"])
    assert missing.exit_code == 2 and "--weights" in missing.output
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
