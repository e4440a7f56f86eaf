from __future__ import annotations

import json

import numpy as np
import onnxruntime
import torch
from typer.testing import CliRunner

from tsjnet.cli import app
from tsjnet.model import TINY, TSJNet, TSJNetConfig
from tsjnet.model.checkpoint import save_checkpoint


def test_summary_json(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["summary", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["params"] == 45_065_315
    assert abs(payload["macs_480x640"] / 1e9 - 2125.0) < 0.5
    config = tmp_path / "official.yaml"
    config.write_text("model:\n  official_layout: true\n  rel_pos_bias: true\n")
    payload = json.loads(runner.invoke(app, ["summary", "--json", "--config", str(config)]).stdout)
    assert payload["params"] == 45_133_055


def test_onnx_export_matches_pytorch(tmp_path):
    torch.manual_seed(0)
    model = TSJNet(TSJNetConfig(**TINY)).eval()
    weights = save_checkpoint(model, tmp_path / "tiny")
    out = tmp_path / "tiny.onnx"
    result = CliRunner().invoke(app, ["export-onnx", "--weights", str(weights), "--out", str(out),
                                      "--height", "64", "--width", "96"])
    assert result.exit_code == 0, result.output
    ir, vi = torch.rand(2, 1, 64, 96), torch.rand(2, 1, 64, 96)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (fused,) = session.run(None, {"infrared": ir.numpy(), "visible": vi.numpy()})
    with torch.no_grad():
        expected = model(ir, vi).fused.numpy()
    assert np.abs(fused - expected).max() < 1e-4
    bad = CliRunner().invoke(app, ["export-onnx", "--weights", str(weights), "--out", str(out), "--height", "50"])
    assert bad.exit_code == 2 and "divisible by 32" in bad.output
