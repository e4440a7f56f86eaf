"""``tsjnet fuse``: native size, colour recombination, baselines, batching, resumability."""

from __future__ import annotations

from tests.tsjnet.conftest import copy_pairs
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tsjnet.cli import app
from tsjnet.fuse import FuseConfig, NetworkFuser, fuse_folders, pad_to_multiple
from ums.core.executors import ExecutorSettings
from tsjnet.images import merge_luma, split_luma
from tsjnet.model import TINY, TSJNet, TSJNetConfig
from tsjnet.model.checkpoint import save_checkpoint

QUIET = ExecutorSettings(show_progress=False)




@pytest.fixture
def tiny_weights(tmp_path) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(TSJNet(TSJNetConfig(**TINY)), tmp_path / "weights" / "tiny")


def test_colour_recombination_keeps_channel_order():
    bgr = np.zeros((4, 4, 3), np.float32)
    bgr[..., 2] = 255  # pure red
    luma, ycrcb = split_luma(bgr)
    assert luma[0, 0] == pytest.approx(0.299 * 255, abs=1e-3)  # BT.601: red weighs 0.299
    assert merge_luma(luma, ycrcb)[0, 0].tolist() == [0, 0, 255]
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3)).astype(np.float32)
    luma, ycrcb = split_luma(image)
    assert np.abs(merge_luma(luma, ycrcb).astype(int) - image).max() <= 1
    brighter = merge_luma(luma + 20, ycrcb).astype(int)
    assert np.mean(brighter - image) == pytest.approx(20, abs=1.5)  # a new Y shifts every channel equally


def test_reflect_padding_to_a_multiple_of_32():
    batch = torch.arange(2 * 50 * 70, dtype=torch.float32).view(2, 1, 50, 70)
    padded = pad_to_multiple(batch, 32)
    assert padded.shape == (2, 1, 64, 96)
    assert torch.equal(padded[..., :50, :70], batch)
    assert torch.equal(padded[..., 50, :70], batch[..., 48, :])  # mirrored, not zero
    assert pad_to_multiple(torch.zeros(1, 1, 10, 64), 32).shape == (1, 1, 32, 64)  # too small to reflect: replicate


def test_network_fuses_at_native_size_and_batches_consistently(tmp_path):
    torch.manual_seed(0)
    fuser = NetworkFuser(TSJNet(TSJNetConfig(**TINY)))
    rng = np.random.default_rng(0)
    ir = [rng.uniform(0, 255, (50, 70)).astype(np.float32) for _ in range(2)]
    vi = [rng.uniform(0, 255, (50, 70)).astype(np.float32) for _ in range(2)]
    together = fuser.fuse(ir, vi)
    apart = [fuser.fuse([a], [b])[0] for a, b in zip(ir, vi)]
    assert together[0].shape == (50, 70)
    for joint, single in zip(together, apart):
        assert np.abs(joint - single).max() < 1e-3
    official = NetworkFuser(fuser.model, official_compat=True)
    assert official.fuse(ir[:1], vi[:1])[0].shape == (50, 70)  # through 512 x 512 and back
    square = official.fuse([rng.uniform(0, 255, (512, 512)).astype(np.float32)] * 1,
                           [rng.uniform(0, 255, (512, 512)).astype(np.float32)])[0]
    assert square.min() == 0 and square.max() == 255  # the per-image min-max stretch
    assert np.array_equal(square, np.floor(square))  # truncated to integers


def test_baselines_fuse_real_pairs_and_rerun_skips(tmp_path):
    ir_dir, vi_dir = copy_pairs(tmp_path, "msrs", ["00004N.png", "00055D.png"])
    (vi_dir / "orphan.png").write_bytes((vi_dir / "00004N.png").read_bytes())
    out = tmp_path / "mean"
    report = fuse_folders(ir_dir, vi_dir, out, FuseConfig(method="mean"), QUIET)
    assert len(report.written) == 2
    assert any("orphan.png" in problem and "no partner" in problem for problem in report.problems)
    fused = cv2.imread(str(out / "00055D.png"))
    visible = cv2.imread(str(vi_dir / "00055D.png"))
    infrared = cv2.imread(str(ir_dir / "00055D.png"), cv2.IMREAD_GRAYSCALE).astype(np.float32)
    expected_luma = (infrared + split_luma(visible.astype(np.float32))[0]) / 2
    assert np.abs(split_luma(fused.astype(np.float32))[0] - expected_luma).mean() < 1.0
    again = fuse_folders(ir_dir, vi_dir, out, FuseConfig(method="mean"), QUIET)
    assert not again.written and len(again.skipped) == 2


def test_size_mismatch_is_reported_and_the_rest_continue(tmp_path):
    ir_dir, vi_dir = copy_pairs(tmp_path, "msrs", ["00004N.png", "00055D.png"])
    image = cv2.imread(str(vi_dir / "00004N.png"))
    cv2.imwrite(str(vi_dir / "00004N.png"), cv2.resize(image, (320, 240)))
    (ir_dir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (vi_dir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    report = fuse_folders(ir_dir, vi_dir, tmp_path / "out", FuseConfig(method="max", grey=True), QUIET)
    assert [path.name for path in report.written] == ["00055D.png"]
    assert any("00004N.png" in p and "ums align" in p for p in report.problems)
    assert any("broken.png" in p and "not a readable image" in p for p in report.problems)
    assert cv2.imread(str(tmp_path / "out" / "00055D.png"), cv2.IMREAD_UNCHANGED).ndim == 2


def test_cli_fuses_with_weights_and_names_the_missing_flag(tmp_path, tiny_weights):
    ir_dir, vi_dir = copy_pairs(tmp_path, "msrs", ["00004N.png", "00055D.png"], size=(160, 120))
    runner = CliRunner()
    missing = runner.invoke(app, ["fuse", "--ir", str(ir_dir), "--vi", str(vi_dir), "--out", str(tmp_path / "f")])
    assert missing.exit_code == 2 and "--weights" in missing.output
    result = runner.invoke(app, ["fuse", "--ir", str(ir_dir), "--vi", str(vi_dir), "--out", str(tmp_path / "f"),
                                 "--weights", str(tiny_weights), "--batch-size", "2", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "fused 2 pairs" in result.output
    fused = cv2.imread(str(tmp_path / "f" / "00055D.png"))
    assert fused.shape == (120, 160, 3)


def synthetic_pairs(tmp_path: Path, n: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(2)
    ir_dir, vi_dir = tmp_path / "ir", tmp_path / "vi"
    for folder in (ir_dir, vi_dir):
        folder.mkdir()
    for index in range(n):
        cv2.imwrite(str(ir_dir / f"{index:03d}.png"), cv2.GaussianBlur(rng.integers(0, 255, (96, 128), np.uint8), (0, 0), 2))
        cv2.imwrite(str(vi_dir / f"{index:03d}.png"), cv2.GaussianBlur(rng.integers(0, 255, (96, 128, 3), np.uint8), (0, 0), 2))
    return ir_dir, vi_dir


def test_two_workers_fuse_the_same_bytes_as_one(tmp_path, tiny_weights):
    ir_dir, vi_dir = synthetic_pairs(tmp_path, 6)
    outputs = {}
    for workers in (1, 2):
        out = tmp_path / f"fused{workers}"
        report = fuse_folders(ir_dir, vi_dir, out, FuseConfig(weights=tiny_weights, batch_size=2),
                              ExecutorSettings(workers=workers, show_progress=False))
        assert len(report.written) == 6 and not report.problems and not report.incomplete
        outputs[workers] = {path.name: path.read_bytes() for path in sorted(out.iterdir())}
    assert outputs[1] == outputs[2]


def test_no_pair_to_fuse_exits_non_zero(tmp_path):
    (tmp_path / "ir").mkdir()
    (tmp_path / "vi").mkdir()
    result = CliRunner().invoke(app, ["fuse", "--ir", str(tmp_path / "ir"), "--vi", str(tmp_path / "vi"),
                                      "--out", str(tmp_path / "f"), "--method", "mean", "--no-progress"])
    assert result.exit_code == 2 and "no pair was fused" in result.output
