"""The from-scratch dense matcher, research code in bench/: its size, readouts and cost volume, its
training through the package's run (bench/dense_matcher_train.py), its checkpoints, and its row in
bench/registration.py."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from dense_matcher import (DenseMatcher, FlowEstimator, is_dense_checkpoint, load_matcher, local_ssd_cost,
                           register_dense)
from dense_matcher_train import DenseTrainConfig, PairSampler, dense_losses, main, train_dense
from tests.ums.align.learned.conftest import pair_folder  # noqa: F401  (fixture)
from ums.align.deformation import FieldRange
from ums.align.flow import warp_with_flow
from ums.align.learned.blocks import parameter_count
from ums.align.learned.checkpoint import export_refiner, save_checkpoint, training_state_path
from ums.align.learned.refiner import ResidualRefiner
from ums.align.learned.train import load_pairs


def test_published_size_and_shapes():
    assert parameter_count(DenseMatcher(readout="regress")) == 1_823_688  # docs/reference/registration.md §1.3
    # the soft-argmax heads read 81 correlation channels instead of 49 SSD ones
    assert parameter_count(DenseMatcher()) == 1_823_688 + 32 * (3 * 3 * (128 // 2) + 3 * 3 * (64 // 2))
    for readout in ("soft-argmax", "regress"):
        tiny = DenseMatcher(width=0.25, readout=readout).eval()
        with torch.no_grad():
            flow = tiny(torch.rand(2, 3, 64, 96), torch.rand(2, 3, 64, 96))
        assert flow.shape == (2, 2, 64, 96)


def test_soft_argmax_readout_follows_the_correlation_peak_untrained():
    """An untrained estimator already points at the shift between two views of one texture: its
    shared features correlate best there and the residual head starts at zero. The softmax's tail
    over the 80 other offsets pulls the estimate slightly towards the window's centre (~0.15 px
    here); training's residual head and the finer levels take that up."""
    torch.manual_seed(0)
    estimator = FlowEstimator(16, 1).eval()
    source = torch.nn.functional.interpolate(torch.randn(1, 16, 24, 24), size=(48, 48), mode="bicubic")
    target = torch.roll(source, shifts=(-2, 3), dims=(2, 3))  # target(p) = source(p + (dx=-3, dy=2))
    with torch.no_grad():
        flow = estimator(source, target)[0, :, 12:36, 12:36]
    assert torch.allclose(flow[0].median(), torch.tensor(-3.0), atol=0.25)
    assert torch.allclose(flow[1].median(), torch.tensor(2.0), atol=0.25)


def test_cost_volume_is_zero_at_the_true_offset():
    source = torch.rand(1, 4, 40, 40)
    target = torch.roll(source, shifts=(-4, 8), dims=(2, 3))  # target(p) = source(p + (dy=4, dx=-8))
    cost = local_ssd_cost(target, source)
    offsets = [(dy, dx) for dy in range(-12, 13, 4) for dx in range(-12, 13, 4)]
    best = cost[0, :, 14:26, 14:26].mean((1, 2)).argmin()
    assert offsets[best] == (4, -8)


@pytest.mark.slow
@pytest.mark.parametrize("readout", ["soft-argmax", "regress"])
def test_one_batch_is_learned(pair_folder, readout):  # noqa: F811
    """Gradients reach every block: the net fits one fixed batch of warps."""
    torch.manual_seed(0)
    sampler = PairSampler(load_pairs([pair_folder]), 64, seed=0)
    sampler.regimes = [FieldRange(rotation_deg=0, scale=0, translation_px=5, elastic_px=0)] * 2
    batch = sampler.batch(4, torch.device("cpu"))
    model = DenseMatcher(width=0.25, readout=readout)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    config = DenseTrainConfig(pairs=[pair_folder], out=pair_folder / "unused.pt")
    history = []
    for _ in range(60):
        terms = dense_losses(model, batch, config)
        optimiser.zero_grad()
        terms["total"].backward()
        optimiser.step()
        history.append(float(terms["epe"].detach()))
    assert np.mean(history[-5:]) < np.mean(history[:5]) / 4


def test_samples_depend_on_seed_step_and_index_only(pair_folder):  # noqa: F811
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


def _tiny(pair_folder, out, **overrides):  # noqa: F811
    settings = dict(pairs=[pair_folder], out=out, width=0.25, crop=64, batch=2, steps=4, show_progress=False)
    return DenseTrainConfig(**{**settings, **overrides})


@pytest.mark.slow
def test_training_writes_a_checkpoint_the_bench_registers_with(pair_folder, tmp_path):  # noqa: F811
    out = tmp_path / "matcher.pt"
    history = train_dense(_tiny(pair_folder, out, steps=3))
    assert len(history) == 3 and all(np.isfinite(h["total"]) for h in history)
    assert out.exists() and out.with_suffix(".loss.png").exists() and not out.with_suffix(".safetensors").exists()
    assert len(json.loads(out.with_suffix(".history.json").read_text())) == 3
    assert training_state_path(out).exists() and is_dense_checkpoint(out)
    model = load_matcher(out)
    assert model.config == {"width": 0.25, "readout": "soft-argmax"} and not model.training
    fixed = cv2.imread(str(pair_folder / "ir" / "0.png"), cv2.IMREAD_GRAYSCALE)
    moving = cv2.imread(str(pair_folder / "vi" / "0.png"))
    registration = register_dense(fixed, moving, out)
    assert registration.flow.shape == (128, 160, 2) and registration.transform is None
    assert registration.method == "dense-matcher" and 0.0 <= registration.score <= 1.0


def test_the_benchmark_scores_a_dense_checkpoint_alone_and_a_refiner_in_the_cascade(tmp_path):
    from registration import learned_method  # bench/registration.py

    dense = tmp_path / "matcher.pt"
    save_checkpoint(DenseMatcher(width=0.25), dense, {}, kind="ums-dense-matcher")
    name, method = learned_method(dense, "cpu")
    assert name == "dense matcher" and callable(method)
    textured = cv2.resize(np.random.default_rng(2).integers(0, 255, (16, 20), np.uint8), (80, 64))
    assert method(textured, textured, None).flow.shape == (64, 80, 2)
    refiner = save_checkpoint(ResidualRefiner(width=0.25), tmp_path / "r.pt", {})
    for weights in (refiner, export_refiner(refiner, tmp_path / "r.safetensors"), None):
        assert not (weights and is_dense_checkpoint(weights))
        assert learned_method(weights, "cpu") == ("learned", dict(method="learned", weights=weights, device="cpu"))


@pytest.mark.slow
def test_resume_continues_exactly_and_refuses_other_settings(pair_folder, tmp_path):  # noqa: F811
    """Two steps, stop, two more from the saved state == four in one go, to the last bit."""
    straight = tmp_path / "straight.pt"
    train_dense(_tiny(pair_folder, straight))
    interrupted = tmp_path / "interrupted.pt"
    train_dense(_tiny(pair_folder, interrupted, steps=2))
    with pytest.raises(ValueError, match=r"other settings \(readout\)"):
        train_dense(_tiny(pair_folder, interrupted, resume=True, readout="regress"))
    history = train_dense(_tiny(pair_folder, interrupted, resume=True))
    assert [h["step"] for h in history] == [0, 1, 2, 3]
    expected = json.loads(straight.with_suffix(".history.json").read_text())
    assert [h["total"] for h in history] == [h["total"] for h in expected]
    for name, tensor in load_matcher(straight).state_dict().items():
        assert torch.equal(tensor, load_matcher(interrupted).state_dict()[name]), name


@pytest.mark.slow
def test_states_from_before_the_model_and_readout_options_resume_as_published(pair_folder, tmp_path):  # noqa: F811
    out = tmp_path / "m.pt"
    train_dense(_tiny(pair_folder, out, steps=1, readout="regress"))
    state = torch.load(training_state_path(out), weights_only=True)
    identity = json.loads(state["identity"])
    del identity["readout"], identity["model"]
    torch.save({**state, "identity": json.dumps(identity)}, training_state_path(out))
    with pytest.raises(ValueError, match=r"other settings \(readout\)"):
        train_dense(_tiny(pair_folder, out, resume=True))
    history = train_dense(_tiny(pair_folder, out, resume=True, readout="regress"))
    assert [h["step"] for h in history] == [0, 1, 2, 3]


@pytest.mark.slow
def test_held_out_validation_scores_the_benchmark_warps(pair_folder, tmp_path):  # noqa: F811
    """Validated steps carry the held-out median EPE; an untrained net scores like no registration
    (the drone-like warps move pixels by several px), a net that outputs the truth would score 0."""
    out = tmp_path / "m.pt"
    history = train_dense(_tiny(pair_folder, out, steps=3, val_pairs=[pair_folder], val_every=2, val_fields=1))
    validated = [h for h in history if "val_epe_median" in h]
    assert [h["step"] for h in validated] == [1, 2]  # after step 2 (every 2) and after the last
    assert all(1.0 < h["val_epe_median"] < 40.0 for h in validated)
    record = torch.load(out, weights_only=True)["training"]
    assert [v["step"] for v in record["validations"]] == [1, 2]


def test_bad_weights_are_named(tmp_path):
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
    assert not is_dense_checkpoint(foreign) and not is_dense_checkpoint(tmp_path / "missing.pt")


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


@pytest.mark.slow
def test_command_line_trains_resumes_and_names_bad_settings(pair_folder, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "m.pt"
    common = ["--pairs", str(pair_folder), "--out", str(out), "--batch", "2", "--crop", "64", "--width", "0.25",
              "--readout", "regress", "--translation-px", "6", "--no-progress"]
    assert main(common + ["--steps", "1"]) == 0
    assert main(common + ["--steps", "2", "--resume"]) == 0
    assert "trained to step 2" in capsys.readouterr().out
    assert torch.load(out, weights_only=True)["training"]["steps"] == 2
    assert load_matcher(out).config == {"width": 0.25, "readout": "regress"}
    assert main(common + ["--steps", "3", "--resume", "--crop", "72"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: align-train --resume:") and "other settings (crop)" in error
    assert main(common + ["--readout", "lookup"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "\n" not in error and "readout" in error
