"""Offline by construction: settings that keep ultralytics, FiftyOne, albumentations, torchvision,
Hugging Face and wandb from reaching the network.

Importing ``ums`` (or ``tsjnet``) calls :func:`apply_offline_environment` before any of those
libraries is imported, because most of them read their settings once, at import. Values the user
has already set win: ``os.environ.setdefault`` only fills gaps.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

OFFLINE_ENVIRONMENT = {
    # ultralytics: no hub calls, no pip installs at run time, no telemetry
    "YOLO_OFFLINE": "1",
    "YOLO_AUTOINSTALL": "0",
    "YOLO_VERBOSE": "False",
    # albumentations checks PyPI for a newer version at import
    "NO_ALBUMENTATIONS_UPDATE": "1",
    # FiftyOne: no usage tracking; a database folder we choose; accept the bundled mongod
    "FIFTYONE_DO_NOT_TRACK": "true",
    "FIFTYONE_DATABASE_VALIDATION": "false",
    "FIFTYONE_SHOW_PROGRESS_BARS": "false",
    # Hugging Face hubs (pulled in indirectly) and wandb (never a dependency, but sometimes present)
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "WANDB_MODE": "disabled",
    "WANDB_DISABLED": "true",
}


def cache_root() -> Path:
    """Per-user folder for library settings and the FiftyOne database (``UMS_CACHE_DIR`` overrides)."""
    explicit = os.environ.get("UMS_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ums"


def apply_offline_environment() -> dict[str, str]:
    """Fill in every offline setting that is not already set; return the settings in force."""
    root = cache_root()
    defaults = {
        **OFFLINE_ENVIRONMENT,
        "YOLO_CONFIG_DIR": str(root / "ultralytics"),
        "FIFTYONE_DATABASE_DIR": str(root / "fiftyone-db"),
        "TORCH_HOME": str(root / "torch"),
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    return {key: os.environ[key] for key in defaults}


def install_ultralytics_font() -> Path | None:
    """Place a TTF at ``$YOLO_CONFIG_DIR/Ultralytics/Arial.ttf``.

    Every ultralytics trainer start otherwise downloads Arial.ttf, even with plots off. matplotlib
    (an ultralytics dependency) ships DejaVuSans, which serves the same purpose. Returns the font
    path, or None when no TTF could be found.
    """
    target = Path(os.environ["YOLO_CONFIG_DIR"]) / "Ultralytics" / "Arial.ttf"
    if target.exists():
        return target
    source = _bundled_ttf()
    if source is None:
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.copyfile(source, temporary)
    os.replace(temporary, target)
    return target


def _bundled_ttf() -> Path | None:
    try:
        import matplotlib
    except ImportError:
        return None
    candidate = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    return candidate if candidate.exists() else None


def configure_ultralytics() -> None:
    """Import ultralytics with its settings locked down: font in place, hub sync and integrations off."""
    apply_offline_environment()
    install_ultralytics_font()
    from ultralytics.utils import SETTINGS

    # integrations default to on and call out (or log) whenever their package happens to be installed
    integrations = {key: False for key in ("clearml", "comet", "dvc", "mlflow", "raytune", "tensorboard", "wandb")
                    if SETTINGS.get(key)}
    if SETTINGS.get("sync", True) or integrations:
        SETTINGS.update({"sync": False, **integrations})
