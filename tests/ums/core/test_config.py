import re

import pytest
from pydantic import BaseModel, ConfigDict

from ums.align.stage import AlignConfig
from ums.autolabel.stage import AutolabelConfig
from ums.core.config import ConfigError, default_config_path, load_config, load_stage_config
from ums.core.executors import ExecutorSettings
from ums.crop import CropConfig
from ums.ingest import IngestConfig
from ums.synth import SynthFlightConfig


def test_shipped_defaults_validate():
    assert load_config(IngestConfig, default_config_path("ingest")) == IngestConfig()
    synth = load_config(SynthFlightConfig, default_config_path("synth-flight"))
    assert synth.n == SynthFlightConfig().n and synth.late_thermal_every == 5


def test_overrides_win_and_none_is_ignored(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("timestamp_tolerance_s: 2.5\nextract_thermal_raw: false\n")
    config = load_config(IngestConfig, path, timestamp_tolerance_s=3, extract_thermal_raw=None)
    assert (config.timestamp_tolerance_s, config.extract_thermal_raw) == (3.0, False)


def test_a_files_executor_section_comes_back_beside_the_stage_config_and_options_win(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("timestamp_tolerance_s: 2.5\nexecutor:\n  workers: 2\n  executor: dask\n  show_progress: false\n")
    config, executor = load_stage_config(IngestConfig, path, {"workers": 3, "executor": None, "show_progress": None})
    assert config == IngestConfig(timestamp_tolerance_s=2.5)
    assert executor == ExecutorSettings(workers=3, executor="dask", show_progress=False)
    # no file, or a file without the section: the executor's own defaults
    assert load_stage_config(IngestConfig, None, {}) == (IngestConfig(), ExecutorSettings())


@pytest.mark.parametrize("text, keys, example, option", [
    ("workers: 4\n", "workers says", "`executor: {workers: 4}`", "--workers"),
    ("executor: dask\nscheduler_file: s.json\n", "executor, scheduler_file say", "`executor: {executor: dask, "
     "scheduler_file: s.json}`", "--executor"),
    ("show_progress: false\n", "show_progress says", "`executor: {show_progress: False}`", "--no-progress"),
])
def test_executor_keys_outside_their_section_are_one_line_saying_where_they_go(tmp_path, text, keys, example, option):
    path = tmp_path / "old.yaml"
    path.write_text("timestamp_tolerance_s: 2\n" + text)
    with pytest.raises(ConfigError) as error:
        load_stage_config(IngestConfig, path, {})
    plural = "them" if " say " in keys + " " else "it"
    assert str(error.value) == (f"{keys} where the stage runs, not what it computes (move {plural} under an "
                                f"`executor:` section, e.g. {example}, or give {option})").replace(" say", f" in {path} say", 1)


def test_bad_executor_settings_are_named_as_such(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("executor:\n  wrokers: 2\n")
    with pytest.raises(ConfigError) as error:
        load_stage_config(CropConfig, path, {})
    assert str(error.value) == f"unknown executor setting wrokers=2 in {path}: did you mean workers? (correct it in {path})"
    path.write_text("executor:\n  workers: 2\n")
    with pytest.raises(ConfigError, match=f"^invalid executor settings in {path}: workers applies to processes this "
                                          "command starts.*correct it in"):
        load_stage_config(CropConfig, path, {"scheduler": "tcp://10.0.0.5:8786"})
    path.write_text("output_width: 320\n")  # the options alone conflict: the file is not named
    with pytest.raises(ConfigError, match=r"^invalid executor settings: workers applies .*\(`--help` says"):
        load_stage_config(CropConfig, path, {"workers": 2, "scheduler": "tcp://10.0.0.5:8786"})


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
