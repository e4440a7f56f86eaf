"""Stage configs: pydantic models whose defaults may be overridden by a YAML file, then by flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from ums.resources import resource_dir

PIPELINES_DIR = resource_dir("pipelines")
ConfigT = TypeVar("ConfigT", bound=BaseModel)


class ConfigError(ValueError):
    pass


def default_config_path(stage: str) -> Path | None:
    """``pipelines/<stage>.yaml`` as installed (checkout or wheel alike), or None for a stage without one."""
    path = PIPELINES_DIR / f"{stage}.yaml"
    return path if path.exists() else None


def load_config(model: type[ConfigT], path: str | Path | None = None, **overrides: Any) -> ConfigT:
    """``model`` from its defaults, then ``path`` (YAML), then non-None ``overrides``."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config {path} must be a mapping of settings")
        values.update(loaded)
    _deep_update(values, overrides)
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        source = f" in {path}" if path else ""
        raise ConfigError(f"invalid {model.__name__}{source}:\n{exc}") from exc


def _deep_update(values: dict[str, Any], overrides: dict[str, Any]) -> None:
    """Overrides win key by key, nested settings included; None means "not given"."""
    for key, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            _deep_update(values[key], value)
        elif isinstance(value, dict):
            values[key] = {k: v for k, v in value.items() if v is not None}
        else:
            values[key] = value
