import pytest
from pydantic import BaseModel, ConfigDict

from ums.autolabel.stage import AutolabelConfig
from ums.config import ConfigError, default_config_path, load_config
from ums.crop import CropConfig
from ums.ingest import IngestConfig
from ums.synth import SynthFlightConfig


def test_shipped_defaults_validate():
    assert load_config(IngestConfig, default_config_path("ingest")) == IngestConfig()
    synth = load_config(SynthFlightConfig, default_config_path("synth-flight"))
    assert synth.n == SynthFlightConfig().n and synth.late_thermal_every == 5


def test_overrides_win_and_none_is_ignored(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("timestamp_tolerance_s: 2.5\nworkers: 1\n")
    config = load_config(IngestConfig, path, workers=3, show_progress=None)
    assert (config.timestamp_tolerance_s, config.workers, config.show_progress) == (2.5, 3, True)


@pytest.mark.parametrize("text, message", [("- a list\n", "mapping"), ("bogus: [\n", "cannot read"),
                                           ("timestamp_tolerance_s: fast\n", "timestamp_tolerance_s")])
def test_bad_files_are_named(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as error:
        load_config(IngestConfig, path)
    assert "bad.yaml" in str(error.value)


def test_misspelt_settings_are_errors(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("timestamp_tolerence_s: 2\n")
    with pytest.raises(ConfigError, match="timestamp_tolerence_s"):
        load_config(IngestConfig, path)


def test_bad_value_is_one_line_naming_setting_value_and_rule(tmp_path):
    path = tmp_path / "crop.yaml"
    path.write_text("visible_camera: X\n")
    with pytest.raises(ConfigError) as error:
        load_config(CropConfig, path)
    assert str(error.value) == f"invalid crop setting visible_camera='X' in {path}: should match pattern '^[WZV]$'"
    with pytest.raises(ConfigError) as error:
        load_config(CropConfig, path, visible_camera="Q")
    assert str(error.value) == "invalid crop setting visible_camera='Q' (an option): should match pattern '^[WZV]$'"


def test_nested_and_unknown_settings_get_a_line_each(tmp_path):
    path = tmp_path / "autolabel.yaml"
    path.write_text("detector:\n  confidence: 2\n  confidance: 0.3\nmasks: [1]\nbogus_setting: 1\n")
    with pytest.raises(ConfigError) as error:
        load_config(AutolabelConfig, path)
    assert sorted(str(error.value).splitlines()) == sorted([
        f"invalid autolabel setting detector.confidence=2 in {path}: should be less than or equal to 1",
        f"unknown autolabel setting detector.confidance=0.3 in {path}: did you mean detector.confidence?",
        f"invalid autolabel setting masks=[1] in {path}: should be a valid boolean",
        f"unknown autolabel setting bogus_setting=1 in {path}: not a setting here (known: {', '.join(AutolabelConfig.model_fields)})",
    ])


def test_union_errors_of_one_setting_make_one_line():
    class ShapeConfig(BaseModel):
        model_config = ConfigDict(extra="forbid")
        size: int | list[int] = 1

    with pytest.raises(ConfigError) as error:
        load_config(ShapeConfig, None, size="big")
    assert str(error.value) == ("invalid shape setting size='big' (an option): should be a valid integer, unable to parse "
                                "string as an integer; or should be a valid list")
