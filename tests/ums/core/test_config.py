import re

import pytest
from pydantic import BaseModel, ConfigDict

from ums.align.stage import AlignConfig
from ums.autolabel.stage import AutolabelConfig
from ums.core.config import ConfigError, default_config_path, load_config
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
    assert str(error.value) == (f"invalid crop setting visible_camera='X' in {path}: should be 'W', 'Z' or 'V' "
                                f"(correct it in {path})")
    with pytest.raises(ConfigError) as error:
        load_config(CropConfig, path, visible_camera="Q")
    assert str(error.value) == ("invalid crop setting visible_camera='Q' (an option): should be 'W', 'Z' or 'V' "
                                "(`--help` says what each option takes)")


def test_no_message_carries_pydantics_link_or_spans_lines(tmp_path):
    path = tmp_path / "align.yaml"
    path.write_text("motion: affine\nmethod: [1]\nmin_confident_frames: 0\n")
    with pytest.raises(ConfigError) as error:
        load_config(AlignConfig, path)
    text = str(error.value)
    assert "\n" not in text and "http" not in text and "pydantic" not in text
    assert len(error.value.problems) == 3
    assert f"invalid align setting motion='affine' in {path}: should be 'translation', 'euclidean' or 'similarity'" in text
    assert text.endswith(f"(correct it in {path})")


@pytest.mark.parametrize("text, message", [
    ("a: [1,\n", "not valid YAML at line 2, column 1"),
    ("- 1\n", "must be a mapping of settings, e.g. `seed: 3` on its own line (it holds a list)"),
])
def test_unreadable_files_say_where(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(IngestConfig, path)
    with pytest.raises(ConfigError) as error:
        load_config(IngestConfig, tmp_path / "absent.yaml")
    assert str(error.value) == f"cannot read config {tmp_path / 'absent.yaml'}: No such file or directory (check the --config path)"


def test_nested_and_unknown_settings_get_a_line_each(tmp_path):
    path = tmp_path / "autolabel.yaml"
    path.write_text("detector:\n  confidence: 2\n  confidance: 0.3\nmasks: [1]\nbogus_setting: 1\n")
    with pytest.raises(ConfigError) as error:
        load_config(AutolabelConfig, path)
    assert sorted(error.value.problems) == sorted([
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
                                "string as an integer or should be a valid list (`--help` says what each option takes)")


def test_settings_may_be_called_model_or_path():
    class Named(BaseModel):
        model_config = ConfigDict(extra="forbid")
        model: str = "dense"
        path: str = "."

    assert load_config(Named, None, model="refiner", path="x") == Named(model="refiner", path="x")
