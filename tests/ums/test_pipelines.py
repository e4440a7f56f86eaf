"""Every YAML the package ships (pipelines/, labels/) loads as what the code reads it as. A file with no
registered model fails, so a new stage config cannot ship unchecked."""

from __future__ import annotations

import importlib
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from tests.conftest import PROJECT_ROOT
from ums.core.config import load_config

PIPELINES = PROJECT_ROOT / "pipelines"
LABELS = PROJECT_ROOT / "labels"

# file (relative to pipelines/, glob pattern) -> "module:Model" it must validate as
MODELS = {
    "align.yaml": "ums.align.stage:AlignConfig",
    "autolabel.yaml": "ums.autolabel.stage:AutolabelConfig",
    "crop.yaml": "ums.crop:CropConfig",
    "ingest.yaml": "ums.ingest:IngestConfig",
    "split.yaml": "ums.split:SplitConfig",
    "train-detector.yaml": "ums.train_detector:TrainDetectorConfig",
    "queue.yaml": "ums.queue:QueueConfig",
    "synth-flight.yaml": "ums.synth:SynthFlightConfig",
    "train*.yaml": "tsjnet.engine.config:TrainConfig",
    "cameras/*.yaml": "ums.camera:CameraProfile",
}


def _model_for(relative: Path) -> type[BaseModel]:
    # Path.match anchors at the right only: equal depth makes it a whole-path match (cameras/x.yaml is not *.yaml)
    matches = [target for pattern, target in MODELS.items()
               if len(relative.parts) == len(Path(pattern).parts) and relative.match(pattern)]
    if not matches:
        pytest.fail(f"pipelines/{relative.as_posix()} has no config model: register it in MODELS of {Path(__file__).name}")
    module, name = matches[0].split(":")
    return getattr(importlib.import_module(module), name)


def _models_in(annotation) -> list[type[BaseModel]]:
    """The pydantic models a field's type holds: itself, inside Optional/Union, or as dict values and list items."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is dict:
        args = args[1:]
    return [model for arg in args for model in _models_in(arg)]


def _unknown_keys(model: type[BaseModel], values, prefix: str = "") -> list[str]:
    """Keys no field reads. Not every model forbids extras (the camera profiles), and an ignored,
    misspelt setting would leave its default silently in force."""
    if not isinstance(values, dict):
        return []
    fields = {alias: info for name, info in model.model_fields.items() for alias in {name, info.alias} if alias}
    unknown = []
    for key, value in values.items():
        if key not in fields:
            unknown.append(prefix + str(key))
            continue
        for sub in _models_in(fields[key].annotation):
            if isinstance(value, dict) and typing.get_origin(fields[key].annotation) is dict:
                for name, item in value.items():
                    unknown += _unknown_keys(sub, item, f"{prefix}{key}.{name}.")
            else:
                unknown += _unknown_keys(sub, value, f"{prefix}{key}.")
    return unknown


PIPELINE_FILES = sorted(p.relative_to(PIPELINES) for p in PIPELINES.rglob("*") if p.suffix in {".yaml", ".yml"})


def test_pipelines_hold_yaml():
    # a glob that found nothing would make the parametrized test below pass vacuously
    assert {p.as_posix() for p in PIPELINE_FILES} >= {"crop.yaml", "align.yaml", "ingest.yaml", "cameras/m30t.yaml"}


@pytest.mark.parametrize("relative", PIPELINE_FILES, ids=lambda p: p.as_posix())
def test_pipeline_yaml_validates_against_its_model(relative: Path):
    model = _model_for(relative)
    path = PIPELINES / relative
    load_config(model, path)  # raises ConfigError naming the file and the invalid settings
    values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    unknown = _unknown_keys(model, values)
    assert not unknown, f"pipelines/{relative.as_posix()}: {model.__name__} has no settings {unknown}"


def test_camera_profiles_load_by_name():
    from ums.camera import CameraProfile

    for path in sorted((PIPELINES / "cameras").glob("*.yaml")):
        assert CameraProfile.load(path.stem) == CameraProfile.load(path)


LABEL_FILES = sorted(LABELS.glob("*.yaml"))


def test_labels_load_as_taxonomies_or_mappings():
    from ums.taxonomy import Taxonomy, load_mapping, load_taxonomy

    assert LABEL_FILES
    for path in LABEL_FILES:
        if path.stem == "mappings":
            continue
        taxonomy = load_taxonomy(path.stem)
        assert isinstance(taxonomy, Taxonomy) and taxonomy.classes, path.name
        # the file is found by its name: the name inside must say the same
        assert taxonomy.name == path.stem, f"{path.name} names itself {taxonomy.name!r}"
    mappings = yaml.safe_load((LABELS / "mappings.yaml").read_text(encoding="utf-8"))
    assert isinstance(mappings, dict) and mappings
    for key in mappings:
        source, target = key.split("->")
        assert load_mapping(source, target).table, key


# presets: a shipped variant of a stage's settings, holding only keys whose values differ from the model's
PRESETS = {"train-tiny.yaml"}


def _changed(loaded, defaults, prefix: str = "") -> list[str]:
    if isinstance(loaded, dict) and isinstance(defaults, dict):
        return [key for name in loaded for key in _changed(loaded[name], defaults.get(name), f"{prefix}{name}.")]
    return [] if loaded == defaults else [prefix.rstrip(".")]


@pytest.mark.parametrize("relative", sorted(p.relative_to(PIPELINES).as_posix() for p in PIPELINES.glob("*.yaml")))
def test_each_stage_yaml_holds_its_models_defaults_and_a_preset_only_what_differs(relative):
    """The pydantic model is the one home of a default: the shipped YAML of a stage must load to
    exactly the model's defaults (the CLI starts from the YAML, the API from the model), and a
    preset must not repeat a default, which would silently pin it when the model's changes."""
    model = _model_for(Path(relative))
    path = PIPELINES / relative
    loaded = load_config(model, path).model_dump(mode="json")
    defaults = model().model_dump(mode="json")
    if relative in PRESETS:
        written = yaml.safe_load(path.read_text(encoding="utf-8"))
        repeated = [key for key in _leaf_keys(written) if _value_at(defaults, key) == _value_at(loaded, key)]
        assert repeated == [], f"{relative} repeats defaults: {repeated}"
    else:
        assert _changed(loaded, defaults) == []


def _leaf_keys(values: dict, prefix: str = "") -> list[str]:
    keys = []
    for name, value in values.items():
        keys += _leaf_keys(value, f"{prefix}{name}.") if isinstance(value, dict) and value else [f"{prefix}{name}"]
    return keys


def _value_at(values: dict, dotted: str):
    for part in dotted.split("."):
        values = values.get(part) if isinstance(values, dict) else None
    return values
