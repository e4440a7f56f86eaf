"""Learned-registration files: the residual refiner's inference checkpoints (``--weights``), the
refiner shipped as safetensors, and the resumable training state.

``.pt`` files are read with ``torch.load(weights_only=True)``: a hostile pickle is refused, never
run. Shipped weights are safetensors: tensors and a JSON header, nothing executable.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch

from ums.align.learned.refiner import ResidualRefiner
from ums.core.atomic import write_bytes

REFINER_FORMAT = "ums-residual-refiner"
# the on-disk tag of training states, refiner's included, since the first of them: kept so they resume
TRAINING_STATE_FORMAT = "ums-dense-matcher-training-state"
# checkpoints of the from-scratch matcher that `ums align-train --model dense` wrote; bench/ reads them now
DENSE_MATCHER_FORMAT = "ums-dense-matcher"


def save_torch(payload: dict[str, Any], path: Path) -> Path:
    """``torch.save`` through an atomic write: a crash leaves the previous file intact."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return write_bytes(Path(path), buffer.getvalue())


def read_torch(path: Path, flag: str, device: str | torch.device = "cpu") -> Any:
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling error means "not our checkpoint"
        raise ValueError(f"{flag} {path}: not a readable PyTorch checkpoint ({exc})") from exc


def save_checkpoint(model: torch.nn.Module, path: Path, training: dict, kind: str = REFINER_FORMAT) -> Path:
    """``model``'s config and weights with the run's ``training`` record, tagged ``kind``."""
    return save_torch({"format": kind, "version": 1, "config": model.config,
                       "training": json.loads(json.dumps(training)), "state_dict": model.state_dict()}, path)


def load_refiner(path: str | Path, device: str | torch.device = "cpu") -> ResidualRefiner:
    """The residual refiner at ``path``: a ``.safetensors`` file (as shipped) or an ``align-train``
    checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--weights {path}: no such file (train one with `ums align-train`)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        metadata = _safetensors_metadata(path)
        _check_format(path, metadata.get("format"))
        config, state = json.loads(metadata["config"]), load_file(str(path), device=str(device))
    else:
        checkpoint = read_torch(path, "--weights", device)
        _check_format(path, checkpoint.get("format") if isinstance(checkpoint, dict) else None)
        config, state = checkpoint["config"], checkpoint["state_dict"]
    model = ResidualRefiner(**config)
    model.load_state_dict(state)
    return model.to(device).eval()


def _check_format(path: Path, kind: str | None) -> None:
    if kind == DENSE_MATCHER_FORMAT:
        raise ValueError(f"--weights {path}: a dense-matcher checkpoint; the dense matcher is research code in bench/ "
                         f"now (`python bench/registration.py --weights {path}` scores it), and `ums align --method "
                         "learned` takes a residual refiner from `ums align-train`, or none for the shipped one")
    if kind != REFINER_FORMAT:
        raise ValueError(f"--weights {path}: not a residual-refiner checkpoint (format {kind!r}; "
                         "train one with `ums align-train`)")


def export_refiner(checkpoint: Path, out: Path) -> Path:
    """A refiner checkpoint's weights as safetensors (float32), with its config and training record in
    the header: what the package ships."""
    from safetensors.torch import save

    model = load_refiner(checkpoint)
    training = read_torch(Path(checkpoint), "--weights").get("training", {})
    metadata = {"format": REFINER_FORMAT, "config": json.dumps(model.config),
                "training": json.dumps({k: training[k] for k in ("steps", "seconds", "device") if k in training})}
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    return write_bytes(Path(out), save(state, metadata))


def _safetensors_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return handle.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - any parse error means "not our weights"
        raise ValueError(f"--weights {path}: not a readable safetensors file ({exc})") from exc


def training_state_path(out: Path) -> Path:
    return Path(out).with_suffix(".training-state.pt")
