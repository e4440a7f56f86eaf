"""``tsjnet eval``: per-image values are the metric functions' own, means are means, conventions
and problems are explicit."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from tests.tsjnet.conftest import copy_pairs
from tsjnet import metrics
from tsjnet.cli import app
from tsjnet.evaluate import METRICS, TABLE2, evaluate_folders
from tsjnet.fuse import FuseConfig, fuse_folders
from ums.core.executors import ExecutorSettings


@pytest.fixture
def fused_folders(tmp_path):
    ir_dir, vi_dir = copy_pairs(tmp_path, "msrs", ["00004N.png", "00055D.png"], size=(320, 240))
    fuse_folders(ir_dir, vi_dir, tmp_path / "fused", FuseConfig(method="max", grey=True),
                 ExecutorSettings(show_progress=False))
    return ir_dir, vi_dir, tmp_path / "fused"


def test_per_image_values_and_means(fused_folders):
    ir_dir, vi_dir, fused_dir = fused_folders
    result = evaluate_folders(ir_dir, vi_dir, fused_dir, show_progress=False)
    assert set(result["per_image"]) == {"00004N", "00055D"} and not result["problems"]
    assert set(result["mean"]) == set(METRICS) and set(TABLE2) <= set(METRICS)
    fused = cv2.imread(str(fused_dir / "00055D.png"), cv2.IMREAD_GRAYSCALE).astype(np.float64)
    ir = cv2.imread(str(ir_dir / "00055D.png"), cv2.IMREAD_GRAYSCALE).astype(np.float64)
    vi = cv2.cvtColor(cv2.imread(str(vi_dir / "00055D.png")), cv2.COLOR_BGR2GRAY).astype(np.float64)
    values = result["per_image"]["00055D"]
    assert values["SSIM"] == pytest.approx(metrics.ssim(fused, ir, vi))
    assert values["Qabf"] == pytest.approx(metrics.qabf(fused, ir, vi))
    assert values["CV"] == pytest.approx(metrics.chen_varshney(fused, ir, vi))
    for name in METRICS:
        per_image = [result["per_image"][stem][name] for stem in ("00004N", "00055D")]
        assert result["mean"][name] == pytest.approx(np.mean(per_image))
    # the paper's rule: averaged per-image PSNR is never below the PSNR of the mean MSE
    assert result["mean"]["PSNR"] >= 10 * np.log10(255**2 / result["mean"]["MSE"]) - 1e-9


def test_conventions_differ_where_documented(fused_folders):
    tsjnet_values = evaluate_folders(*fused_folders, show_progress=False, names=("SSIM", "PSNR", "EN"))["mean"]
    cddfuse = evaluate_folders(*fused_folders, convention="cddfuse", show_progress=False,
                               names=("SSIM", "PSNR", "EN"))
    assert cddfuse["mean"]["SSIM"] == pytest.approx(2 * tsjnet_values["SSIM"])
    assert cddfuse["mean"]["PSNR"] == pytest.approx(tsjnet_values["PSNR"])
    assert cddfuse["mean"]["EN"] == pytest.approx(tsjnet_values["EN"] * np.log(2))
    assert cddfuse["convention"]["two_sources"] == "sum"
    with pytest.raises(ValueError, match="unknown convention"):
        evaluate_folders(*fused_folders, convention="matlab")


def test_cli_json_and_missing_files(fused_folders):
    ir_dir, vi_dir, fused_dir = fused_folders
    (fused_dir / "00004N.png").unlink()
    result = CliRunner().invoke(app, ["eval", "--ir", str(ir_dir), "--vi", str(vi_dir), "--fused", str(fused_dir),
                                      "--json", "--metric", "SSIM", "--metric", "VIF"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert list(payload["per_image"]) == ["00055D"] and set(payload["mean"]) == {"SSIM", "VIF"}
    assert any("00004N" in problem for problem in payload["problems"])
