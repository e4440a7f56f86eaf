"""Every option of both commands says what it does and what it takes when left out, and the defaults
``--help`` reads from pipelines/*.yaml are the ones a run really starts from."""

from __future__ import annotations

import re

import pytest
import typer.main
from typer.testing import CliRunner

from tsjnet.cli import app as tsjnet_app
from ums.cli import app as ums_app
from ums.cli_options import config_default
from ums.config import default_config_path, load_config


def options(app, name: str):
    def walk(command, path):
        for sub, child in (getattr(command, "commands", None) or {}).items():
            yield from walk(child, [*path, sub])
        for parameter in command.params:
            if parameter.param_type_name == "option" and parameter.name != "help":
                yield " ".join(path), parameter
    yield from walk(typer.main.get_command(app), [name])


ALL_OPTIONS = [*options(ums_app, "ums"), *options(tsjnet_app, "tsjnet")]


@pytest.mark.parametrize("command, option", ALL_OPTIONS, ids=[f"{c} {o.opts[0]}" for c, o in ALL_OPTIONS])
def test_every_option_is_described_and_shows_its_default(command, option):
    assert option.help, f"{command} {option.opts[0]} has no help"
    shown = (option.required or option.is_flag or isinstance(option.show_default, str) or "[default:" in option.help
             or (option.default is not None and option.show_default is not False))
    assert shown, f"{command} {option.opts[0]} shows no default"


def nested(model, dotted: str):
    value = model
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def stage_model(stage: str):
    from tsjnet.engine import TrainConfig
    from ums.align.stage import AlignConfig
    from ums.autolabel.stage import AutolabelConfig
    from ums.crop import CropConfig
    from ums.split import SplitConfig
    from ums.synth import SynthFlightConfig

    if stage == "train":
        return TrainConfig.load(default_config_path("train"))
    models = {"crop": CropConfig, "align": AlignConfig, "autolabel": AutolabelConfig, "split": SplitConfig,
              "synth-flight": SynthFlightConfig}
    return load_config(models[stage], default_config_path(stage))


SHOWN_DEFAULTS = [("crop", "output_width"), ("crop", "output_height"), ("align", "method"), ("align", "motion"),
                  ("align", "weights"), ("align", "device"), ("autolabel", "detector.format"),
                  ("autolabel", "detector.taxonomy"), ("autolabel", "sam.model_type"), ("autolabel", "sam.image"),
                  ("autolabel", "detector.device"), ("autolabel", "sam.device"),
                  ("split", "seed"), ("synth-flight", "n"), ("synth-flight", "seed"), ("train", "out"), ("train", "epochs"),
                  ("train", "max_steps"), ("train", "batch_size"), ("train", "optim.lr"), ("train", "device"),
                  ("train", "amp"), ("train", "compile"), ("train", "loss.preset"), ("train", "data.num_workers"),
                  ("train", "seed")]


@pytest.mark.parametrize("stage, key", SHOWN_DEFAULTS)
def test_help_shows_the_default_a_run_starts_from(stage, key):
    value = nested(stage_model(stage), key)
    assert config_default(stage, key) == ("none" if value is None else str(value))


def test_help_text_renders_the_defaults():
    def help_of(app, *command):
        result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
        return re.sub(r"\s+", " ", re.sub(r"[│╭╮╰╯─]", " ", result.output))

    assert "[default: (640x512)]" in help_of(ums_app, "crop")
    assert "[default: (similarity)]" in help_of(ums_app, "align")
    assert "[default: one per CPU core; 1: in this process]" in help_of(ums_app, "align")
    assert "[default: (runs/tsjnet)]" in help_of(tsjnet_app, "train")
