"""Stage configs: pydantic models whose defaults may be overridden by a YAML file, then by flags.

A stage's YAML says what to compute. Where it runs (:class:`ums.core.executors.ExecutorSettings`) may
sit in the same file under its own ``executor:`` section; :func:`load_stage_config` returns the two
apart, so that the executor never travels inside the stage's config or its tasks.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from ums.core.executors import ExecutorSettings
from ums.core.resources import resource_dir

PIPELINES_DIR = resource_dir("pipelines")
EXECUTOR_SECTION = "executor"  # a --config file's section of executor settings
ConfigT = TypeVar("ConfigT", bound=BaseModel)


class ConfigError(ValueError):
    """Settings that cannot be used: the message is one line naming each bad setting, where it came
    from and what to do; ``problems`` holds one entry per bad setting."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = problems or [message]


def default_config_path(stage: str) -> Path | None:
    """``pipelines/<stage>.yaml`` as installed (checkout or wheel alike), or None for a stage without one."""
    path = PIPELINES_DIR / f"{stage}.yaml"
    return path if path.exists() else None


def load_config(model: type[ConfigT], path: str | Path | None = None, /, **overrides: Any) -> ConfigT:
    """``model`` from its defaults, then ``path`` (YAML), then non-None ``overrides`` (positional-only
    parameters, so that a setting may be called ``model`` or ``path``)."""
    path = Path(path) if path is not None else None
    return _validated(model, read_config(path), path, overrides)


def load_stage_config(model: type[ConfigT], path: str | Path | None, executor: dict[str, Any], /,
                      **overrides: Any) -> tuple[ConfigT, ExecutorSettings]:
    """A stage's config (``model`` from ``path``, then ``overrides``) and, beside it, where it runs:
    ``path``'s ``executor:`` section, then the non-None ``executor`` overrides (the CLI's options).

    An executor key at the top of the file (``workers: 4``, the form before the section) is refused
    with one line saying where it goes: left to ``extra="forbid"`` it would read as a misspelt setting."""
    path = Path(path) if path is not None else None
    values = read_config(path)
    section = _executor_section(model, values, path)
    executor_path = path if section else None  # a file without the section is not where a conflict of options lies
    return (_validated(model, values, path, overrides),
            _validated(ExecutorSettings, section, executor_path, executor, "executor"))


def read_config(path: Path | None) -> dict[str, Any]:
    """The settings a YAML file holds ({} for no file)."""
    if path is None:
        return {}
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc} (check the --config path)") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot read config {path}: not valid YAML{_yaml_place(exc)} (fix its syntax)") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"config {path} must be a mapping of settings, e.g. `seed: 3` on its own line "
                          f"(it holds a {type(loaded).__name__})")
    return loaded


def _executor_section(model: type[BaseModel], values: dict[str, Any], path: Path | None) -> dict[str, Any]:
    """Take the ``executor:`` section out of a stage's ``values``; refuse executor keys outside it."""
    section = values.pop(EXECUTOR_SECTION, None) if EXECUTOR_SECTION not in model.model_fields else None
    stray = [key for key in values if key in ExecutorSettings.model_fields and key not in model.model_fields]
    if not isinstance(section, (dict, type(None))):
        values[EXECUTOR_SECTION] = section  # `executor: dask`, the key of the old form
        stray.insert(0, EXECUTOR_SECTION)
    if stray:
        several = len(stray) > 1
        moved = ", ".join(f"{key}: {values[key]}" for key in stray)
        option = "--no-progress" if stray[0] == "show_progress" else "--" + stray[0].replace("_", "-")
        raise ConfigError(f"{', '.join(stray)} in {path} {'say' if several else 'says'} where the stage runs, not what "
                          f"it computes (move {'them' if several else 'it'} under an `executor:` section, e.g. "
                          f"`executor: {{{moved}}}`, or give {option})")
    return dict(section or {})


def _validated(model: type[ConfigT], values: dict[str, Any], path: Path | None, overrides: dict[str, Any],
               name: str | None = None) -> ConfigT:
    values = dict(values)
    _deep_update(values, overrides)
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        problems = _describe_errors(model, exc, values, path, overrides, name)
        raise ConfigError(f"{'; '.join(problems)} ({_next_step(problems, path)})", problems) from exc


def _yaml_place(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{where}: {problem}" if problem else where


def _next_step(problems: list[str], path: Path | None) -> str:
    if path is not None and any(problem.split(":")[0].endswith(f" in {path}") for problem in problems):
        return f"correct it in {path}"
    return "`--help` says what each option takes"


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


_MESSAGE_SUBJECT = re.compile(r"^(?:Input|String|Value|List|Dictionary|Tuple|Set|Decimal|Number|Object) (?=should|is )")
_MESSAGE_PREFIX = re.compile(r"^(?:Value error|Assertion failed|Assertion error), ")
_MAX_VALUE_CHARS = 80


def _describe_errors(model: type[BaseModel], exc: ValidationError, given: dict[str, Any], path: Path | None,
                     overrides: dict[str, Any], name: str | None = None) -> list[str]:
    """One entry per bad setting: pydantic's own text spreads each over three lines, in its terms,
    with a link to its documentation. ``name``: what the settings are called (default: the model's stage)."""
    stage = name or re.sub(r"(?<!^)(?=[A-Z])", "-", model.__name__.removesuffix("Config")).lower() or model.__name__
    lines: dict[tuple[str, ...], list[str]] = {}
    heads: dict[tuple[str, ...], str] = {}
    for error in exc.errors(include_url=False):
        parts = _setting_path(error, given)
        dotted = ".".join(parts)
        source = " (an option)" if _given(overrides, parts) else f" in {path}" if path else ""
        if not parts:
            heads[parts] = f"invalid {stage} settings{source}"
        elif error["type"] == "missing":
            heads[parts] = f"missing {stage} setting {dotted}{source}"
        else:
            kind = "unknown" if error["type"] == "extra_forbidden" else "invalid"
            heads[parts] = f"{kind} {stage} setting {dotted}={_short(error['input'])}{source}"
        if error["type"] == "extra_forbidden":
            message = _unknown_hint(model, parts)
        elif error["type"] == "missing":
            message = "required"
        else:
            message = _MESSAGE_PREFIX.sub("", _MESSAGE_SUBJECT.sub("", " ".join(error["msg"].split())))
        lines.setdefault(parts, []).append(message)
    return [f"{heads[parts]}: {' or '.join(dict.fromkeys(messages))}" for parts, messages in lines.items()]


def _setting_path(error: Any, given: dict[str, Any]) -> tuple[str, ...]:
    """The setting an error is about. Pydantic's location also names the member a union tried
    (``size.int``), which is no setting: a part counts only where the given values have it."""
    parts: list[str] = []
    value: Any = given
    location = error["loc"]
    for position, part in enumerate(location):
        last = position == len(location) - 1
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, (list, tuple)) and isinstance(part, int) and part < len(value):
            value = value[part]
        elif not (last and error["type"] in ("missing", "extra_forbidden")):
            continue
        parts.append(str(part))
    return tuple(parts)


def _given(overrides: dict[str, Any], parts: tuple[str, ...]) -> bool:
    value: Any = overrides
    for part in parts:
        if not isinstance(value, dict) or value.get(part) is None:
            return False
        value = value[part]
    return bool(parts)


def _unknown_hint(model: type[BaseModel], parts: tuple[str, ...]) -> str:
    known = _fields_at(model, parts[:-1])
    if not known:
        return "not a setting here"
    close = difflib.get_close_matches(parts[-1], known, n=1)
    if close:
        return f"did you mean {'.'.join((*parts[:-1], close[0]))}?"
    return f"not a setting here (known: {', '.join(known)})"


def _fields_at(model: type[BaseModel], parts: tuple[str, ...]) -> list[str]:
    """The setting names of the (nested) model at ``parts``; empty where that is not one model."""
    current: Any = model
    for part in parts:
        field = current.model_fields.get(part) if isinstance(current, type) and issubclass(current, BaseModel) else None
        if field is None:
            return []
        candidates = [field.annotation]
        if typing.get_origin(field.annotation) in (typing.Union, types.UnionType):
            candidates = [a for a in typing.get_args(field.annotation) if a is not type(None)]
        current = candidates[0] if len(candidates) == 1 else None
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_VALUE_CHARS else text[: _MAX_VALUE_CHARS - 3] + "..."
