import pytest

from ums.config import ConfigError, default_config_path, load_config
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
