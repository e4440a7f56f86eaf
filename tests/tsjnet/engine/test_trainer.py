"""Training that learns, resumes bit for bit, runs under DDP (gloo), clips unscaled gradients."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file
from typer.testing import CliRunner

from tests.conftest import shared_data
from tests.tsjnet.conftest import make_ums_export
from tsjnet import metrics
from tsjnet.cli import app
from tsjnet.data import FusionDataset
from tsjnet.engine import TrainConfig, Trainer, train
from tsjnet.model import TINY

TASKS = dict(pretrained=False, segmenter="none", detector_min_size=96, detector_max_size=128, detector_box_samples=64)


def tiny_config(root: Path, out: Path, **overrides) -> TrainConfig:
    settings = dict(model=dict(TINY), tasks=dict(TASKS), out=out, epochs=100, batch_size=2, log_every=1,
                    show_progress=False, data=dict(root=root, resize=(96, 128), num_workers=0, val_split=None),
                    optim=dict(lr=1e-3))
    settings.update(overrides)
    return TrainConfig.model_validate(settings)


def fusion_scores(trainer: Trainer, dataset: FusionDataset) -> tuple[float, float]:
    ssim, vif = [], []
    for _, ir, luma, fused in trainer.fuse_samples(dataset):
        fused = np.round(fused)
        ssim.append(metrics.ssim(fused, ir, luma))
        vif.append(metrics.vif(fused, ir, luma))
    return float(np.mean(ssim)), float(np.mean(vif))


@pytest.mark.slow
def test_tiny_config_learns_on_msrs(tmp_path):
    """A few dozen CPU steps on the public MSRS pairs (boxes from labels_det_yolo/fusion): the loss
    falls and the fused output's SSIM and VIF against the sources rise above the untrained net's."""
    trainer = Trainer(tiny_config(shared_data("msrs"), tmp_path / "run", max_steps=30))
    plain = FusionDataset(trainer.train_index, trainer.tasks.label_ids, None, augment=False, resize=(96, 128))
    ssim_before, vif_before = fusion_scores(trainer, plain)
    trainer.fit()
    ssim_after, vif_after = fusion_scores(trainer, plain)
    losses = [row["loss"] for row in trainer.records.steps]
    assert len(losses) == 30 and all("detection" in row for row in trainer.records.steps)
    assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:5])
    assert ssim_after > ssim_before + 0.05, (ssim_before, ssim_after)
    assert vif_after > vif_before + 0.01, (vif_before, vif_after)
    assert (tmp_path / "run" / "curves.png").stat().st_size > 0
    assert (tmp_path / "run" / "tsjnet.safetensors").is_file()
    assert any((tmp_path / "run" / "tensorboard").iterdir())


@pytest.mark.slow
def test_resume_continues_bit_identically(tmp_path):
    root = make_ums_export(tmp_path / "data", names=tuple("abcdefg"))
    straight = train(tiny_config(root, tmp_path / "straight", max_steps=5))  # 3 steps per epoch: crosses one
    train(tiny_config(root, tmp_path / "resumed", max_steps=2))
    resumed = train(tiny_config(root, tmp_path / "resumed", max_steps=5))
    assert resumed.counters.global_step == 5 and resumed.counters.epoch == straight.counters.epoch == 1
    a, b = load_file(tmp_path / "straight" / "tsjnet.safetensors"), load_file(tmp_path / "resumed" / "tsjnet.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [row["loss"] for row in straight.records.steps] == [row["loss"] for row in resumed.records.steps]
    with pytest.raises(ValueError, match="another model config"):
        Trainer(tiny_config(root, tmp_path / "resumed", max_steps=6, model=dict(TINY, decoder_merge="sum")))


def test_validation_writes_metrics_and_samples(tmp_path):
    root = make_ums_export(tmp_path / "data")  # train a, b, c; val d
    trainer = train(tiny_config(root, tmp_path / "run", epochs=1, tasks=dict(TASKS, segmenter="deeplabv3_resnet50"),
                                data=dict(root=root, resize=(64, 96), num_workers=0)))
    assert trainer.val_set is not None and "segmentation" in trainer.records.steps[0]
    row = trainer.records.validation[-1]
    assert set(row) >= {"SSIM", "VIF", "Qabf", "EN"} and 0 < row["SSIM"] < 1
    assert (tmp_path / "run" / "samples" / "epoch_001.png").is_file()


def test_clipping_sees_unscaled_gradients(tmp_path, monkeypatch):
    """fp16 + GradScaler: the norm clipped is the true gradient norm, not the scale (16: more overflows fp16 on CPU here) times it."""
    root = make_ums_export(tmp_path / "data")
    norms = []
    original = torch.nn.utils.clip_grad_norm_

    def recording(parameters, max_norm, *args, **kwargs):
        norm = original(parameters, max_norm, *args, **kwargs)
        norms.append(float(norm))
        return norm

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording)
    for amp in ("none", "fp16"):
        train(tiny_config(root, tmp_path / amp, max_steps=1, amp=amp, loss=dict(detection=0.0), grad_scaler_init=16.0,
                          data=dict(root=root, resize=(64, 96), num_workers=0, val_split=None)))
    fp32_norm, fp16_norm = norms
    assert 0.25 * fp32_norm < fp16_norm < 4 * fp32_norm, norms  # scaled gradients would be 16x larger


def _ddp_worker(rank: int, world: int, port: int, root: str, out: str, results) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    trainer = train(tiny_config(Path(root), Path(out), max_steps=3, loss=dict(detection=0.0),
                                data=dict(root=root, resize=(64, 96), num_workers=0, val_split=None)))
    checksum = sum(float(p.double().sum()) for p in trainer.model.parameters())
    results[rank] = (checksum, trainer.epoch_order(0))


def test_ddp_two_processes_on_gloo(tmp_path):
    root = make_ums_export(tmp_path / "data", names=tuple("abcdefghi"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    manager = mp.get_context("spawn").Manager()
    results = manager.dict()
    mp.start_processes(_ddp_worker, args=(2, port, str(root), str(tmp_path / "run"), results), nprocs=2,
                       start_method="spawn")
    (sum0, order0), (sum1, order1) = results[0], results[1]
    assert sum0 == sum1  # gradients were all-reduced: the replicas never diverged
    assert order0 and order1 and not set(order0) & set(order1)  # each rank its own share of the epoch
    assert (tmp_path / "run" / "tsjnet.safetensors").is_file()


@pytest.mark.slow
def test_cli_train_names_missing_weights_and_trains(tmp_path):
    root = make_ums_export(tmp_path / "data")
    runner = CliRunner()
    tiny = Path(__file__).resolve().parents[3] / "pipelines" / "train-tiny.yaml"
    missing = runner.invoke(app, ["train", "--data", str(root), "--config", str(tiny), "--out", str(tmp_path / "x")])
    assert missing.exit_code == 2 and "--detector-weights" in missing.output
    result = runner.invoke(app, ["train", "--data", str(root), "--config", str(tiny), "--out", str(tmp_path / "run"),
                                 "--no-pretrained", "--max-steps", "2", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "trained 2 steps" in result.output
    fused = runner.invoke(app, ["fuse", "--ir", str(root / "ir"), "--vi", str(root / "vi"), "--out",
                                str(tmp_path / "fused"), "--weights", str(tmp_path / "run" / "tsjnet.safetensors"),
                                "--no-progress"])
    assert fused.exit_code == 0, fused.output
    no_data = runner.invoke(app, ["train", "--data", str(tmp_path / "nowhere"), "--config", str(tiny), "--no-pretrained"])
    assert no_data.exit_code == 2 and "nowhere" in no_data.output


def test_task_networks_learn_only_when_configured(tmp_path):
    root = make_ums_export(tmp_path / "data")
    data = dict(root=root, resize=(64, 96), num_workers=0, val_split=None)
    frozen = Trainer(tiny_config(root, tmp_path / "frozen", max_steps=1, data=data))
    before = frozen.tasks.detector.roi_heads.box_predictor.bbox_pred.weight.clone()
    frozen.fit()
    assert len(frozen.optimizer.param_groups) == 1
    assert torch.equal(frozen.tasks.detector.roi_heads.box_predictor.bbox_pred.weight, before)
    trained = Trainer(tiny_config(root, tmp_path / "trained", max_steps=1, data=data,
                                  tasks=dict(TASKS, train_detector=True, task_lr=1e-2)))
    before = trained.tasks.detector.roi_heads.box_predictor.bbox_pred.weight.clone()
    trained.fit()
    assert trained.optimizer.param_groups[1]["lr"] == 1e-2
    assert not torch.equal(trained.tasks.detector.roi_heads.box_predictor.bbox_pred.weight, before)


def test_progress_bar_total_is_the_steps_run_and_the_bar_reaches_it(tmp_path, monkeypatch):
    """rich counts an item only when the loop asks for the next one: a bar broken out of after its
    last step stays one short, so the bars here count the same way."""
    bars = []

    def recording_bar(items, description, enabled=True, total=None):
        bar = {"description": description, "total": total, "completed": 0}
        bars.append(bar)
        for item in items:
            yield item
            bar["completed"] += 1

    monkeypatch.setattr("tsjnet.engine.trainer.progress_bar", recording_bar)
    root = make_ums_export(tmp_path / "data", names=tuple("abcdefg"))  # 6 training pairs: 3 steps per epoch
    data = dict(root=root, resize=(64, 96), num_workers=0, val_split=None)
    train(tiny_config(root, tmp_path / "run", max_steps=2, loss=dict(detection=0.0), data=data))
    assert [(b["total"], b["completed"]) for b in bars] == [(2, 2)]
    bars.clear()
    resumed = train(tiny_config(root, tmp_path / "run", max_steps=5, loss=dict(detection=0.0), data=data))
    assert resumed.counters.global_step == 5
    assert [(b["total"], b["completed"]) for b in bars] == [(1, 1), (2, 2)]
    assert [b["description"] for b in bars] == ["epoch 1/2", "epoch 2/2"]  # max_steps ends the run in epoch 2


def test_missing_validation_split_is_said_once_and_recorded(tmp_path, capsys):
    root = make_ums_export(tmp_path / "data")  # train.txt lists a, b, c
    (root / "val.txt").unlink()
    trainer = train(tiny_config(root, tmp_path / "run", epochs=2, loss=dict(detection=0.0),
                                data=dict(root=root, resize=(64, 96), num_workers=0)))
    assert trainer.counters.epoch == 2 and trainer.val_set is None and not trainer.records.validation
    err = capsys.readouterr().err
    assert err.count("no validation split in") == 1 and str(root) in err and "val.txt" in err
    assert "validation metrics are skipped" in err and "`ums split`" in err
    events = b"".join(p.read_bytes() for p in (tmp_path / "run" / "tensorboard").iterdir())
    assert b"no validation split in" in events
