from typer.testing import CliRunner

from tsjnet.cli import app


def test_info_reports_torch_and_devices():
    result = CliRunner().invoke(app, ["info"])
    assert result.exit_code == 0, result.output
    assert "torch 2." in result.output and "CUDA available" in result.output


def test_eval_with_no_pair_exits_non_zero_with_a_hint(tmp_path):
    for folder in ("ir", "vi", "fused"):
        (tmp_path / folder).mkdir()
    result = CliRunner().invoke(app, ["eval", "--ir", str(tmp_path / "ir"), "--vi", str(tmp_path / "vi"),
                                      "--fused", str(tmp_path / "fused"), "--no-progress"])
    assert result.exit_code == 2 and "no image was scored" in result.output and "tsjnet fuse" in result.output
