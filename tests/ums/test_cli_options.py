"""Every option of both commands says what it does and what it takes when left out, and the defaults
``--help`` reads from pipelines/*.yaml are the ones a run really starts from."""

from __future__ import annotations

import re

import pytest
import typer.main
from typer.testing import CliRunner

from tsjnet.cli import app as tsjnet_app
from ums.cli import app as ums_app
from ums.cli_options import Choices, choices, config_default
from ums.core.config import default_config_path, load_config


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


def help_of(app, *command):
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    return re.sub(r"\s+", " ", result.output)


def test_help_text_renders_the_defaults():
    assert "--size WxH Output size on the thermal grid, e.g. 1280x1024. [default: 640x512]" in help_of(ums_app, "crop")
    assert "[default: similarity]" in help_of(ums_app, "align")
    assert "[default: one per CPU core; 1: in this process]" in help_of(ums_app, "align")
    assert "[default: runs/tsjnet]" in help_of(tsjnet_app, "train")
    assert f"--config FILE YAML file of settings to change (the rest keep their defaults). [default: {default_config_path('ingest')}]" \
        in help_of(ums_app, "ingest")
    assert default_config_path("ingest").is_absolute()


def command_paths(app, name: str):
    def walk(command, path):
        yield path
        for sub, child in (getattr(command, "commands", None) or {}).items():
            yield from walk(child, [*path, sub])
    return [(app, path) for path in walk(typer.main.get_command(app), [])]


HELP_PAGES = [*command_paths(ums_app, "ums"), *command_paths(tsjnet_app, "tsjnet")]


@pytest.mark.parametrize("app, command", HELP_PAGES, ids=[" ".join(["ums" if a is ums_app else "tsjnet", *c]) for a, c in HELP_PAGES])
def test_help_shows_no_python_type_and_no_relative_default(app, command):
    text = help_of(app, *command)
    assert not re.search(r"<(?:str|int|float|bool|path|list\[.*?\]|\w+ range)>|list\[|Path\]", text), text  # <str>, <list[Path]>
    assert not re.search(r"\{\w+\}", text), text  # {flight_dir}
    assert "[default: (" not in text and "pipelines/" not in text.replace(str(default_config_path("ingest").parent), "")


EXPECTED_CHOICES = [
    ("ums", "align", "--method", "ums.align.stage", "AlignConfig", "method"),
    ("ums", "align", "--motion", "ums.align.stage", "AlignConfig", "motion"),
    ("ums", "align", "--executor", "ums.core.executors", "ExecutorSettings", "executor"),
    ("ums", "autolabel", "--detector-format", "ums.autolabel.detectors", "DetectorConfig", "format"),
    ("ums", "autolabel", "--sam-image", "ums.autolabel.sam", "SamConfig", "image"),
    ("tsjnet", "fuse", "--method", "tsjnet.fuse", "FuseConfig", "method"),
    ("tsjnet", "fuse", "--precision", "tsjnet.fuse", "FuseConfig", "precision"),
    ("tsjnet", "train", "--amp", "tsjnet.engine.config", "TrainConfig", "amp"),
    ("tsjnet", "train", "--preset", "tsjnet.losses.config", "LossConfig", "preset"),
    ("tsjnet", "eval-det", "--detector-labels", "tsjnet.task_heads", "TaskConfig", "detector_labels"),
]


@pytest.mark.parametrize("cli, command, flag, module, model, field", EXPECTED_CHOICES)
def test_fixed_choices_are_the_config_literal(cli, command, flag, module, model, field):
    import importlib
    import typing

    annotation = getattr(importlib.import_module(module), model).model_fields[field].annotation
    literal = next(a for a in (typing.get_args(annotation) or [annotation]) if typing.get_origin(a) is typing.Literal) \
        if typing.get_origin(annotation) is not typing.Literal else annotation
    option = next(o for c, o in ALL_OPTIONS if c == f"{cli} {command}" and flag in o.opts)
    assert option.metavar.values == typing.get_args(literal) and len(option.metavar.values) >= 2
    app = ums_app if cli == "ums" else tsjnet_app
    assert f"{flag} [{'|'.join(typing.get_args(literal))}]" in help_of(app, command)


def test_every_option_with_a_metavar_object_resolves_its_choices():
    lazy = [(c, o) for c, o in ALL_OPTIONS if isinstance(o.metavar, Choices)]
    assert len(lazy) >= 15
    for command, option in lazy:
        assert option.metavar.values, f"{command} {option.opts[0]}"
        assert option.metavar(option.metavar.values[0]) == option.metavar.values[0]
        with pytest.raises(ValueError, match="is not one of"):
            option.metavar("no-such-value")


def test_choices_unwraps_optional_literals():
    from typing import Literal, Optional

    from pydantic import BaseModel

    class Sample(BaseModel):
        mode: Optional[Literal["a", "b"]] = None
        plain: Literal[1, 2] = 1
        text: str = "x"

    assert choices(Sample, "mode") == ("a", "b") and choices(Sample, "plain") == ("1", "2")
    with pytest.raises(TypeError, match="Sample.text is not a Literal field"):
        choices(Sample, "text")


def test_version_of_both_commands():
    import tsjnet
    import ums

    for app, name, version in ((ums_app, "ums", ums.__version__), (tsjnet_app, "tsjnet", tsjnet.__version__)):
        result = CliRunner().invoke(app, ["--version"])
        assert result.exit_code == 0 and result.output == f"{name} {version}\n"
