from typer.testing import CliRunner

from tsjnet.cli import app


def test_info_reports_torch_and_devices():
    result = CliRunner().invoke(app, ["info"])
    assert result.exit_code == 0, result.output
    assert "torch 2." in result.output and "CUDA available" in result.output
