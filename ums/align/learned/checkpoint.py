"""Learned-registration files: the inference checkpoints (``--weights``) of the dense matcher and of
the cascade's residual refiner, the refiner shipped as safetensors, and the resumable training state.

``.pt`` files are read with ``torch.load(weights_only=True)``: a hostile pickle is refused, never
run. Shipped weights are safetensors: tensors and a JSON header, nothing executable.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch

from ums.align.learned.model import DenseMatcher
from ums.align.learned.refiner import ResidualRefiner
from ums.core.atomic import write_bytes

CHECKPOINT_FORMAT = "ums-dense-matcher"
REFINER_FORMAT = "ums-residual-refiner"
TRAINING_STATE_FORMAT = "ums-dense-matcher-training-state"


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


def save_checkpoint(model: DenseMatcher | ResidualRefiner, path: Path, training: dict) -> Path:
    kind = REFINER_FORMAT if isinstance(model, ResidualRefiner) else CHECKPOINT_FORMAT
    return save_torch({"format": kind, "version": 1, "config": model.config,
                       "training": json.loads(json.dumps(training)), "state_dict": model.state_dict()}, path)


def checkpoint_format(path: Path) -> str | None:
    """REFINER_FORMAT or CHECKPOINT_FORMAT (the dense matcher) for a ``--weights`` file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--weights {path}: no such file (train one with `ums align-train`)")
    if path.suffix == ".safetensors":
        return str(_safetensors_metadata(path).get("format"))
    checkpoint = read_torch(path, "--weights")
    return checkpoint.get("format") if isinstance(checkpoint, dict) else None


def load_refiner(path: str | Path, device: str | torch.device = "cpu") -> ResidualRefiner:
    """The residual refiner at ``path``: a ``.safetensors`` file (as shipped) or an ``align-train
    --model refiner`` checkpoint."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        metadata = _safetensors_metadata(path)
        if metadata.get("format") != REFINER_FORMAT:
            raise ValueError(f"--weights {path}: not residual-refiner weights (format {metadata.get('format')!r})")
        config, state = json.loads(metadata["config"]), load_file(str(path), device=str(device))
    else:
        checkpoint = read_torch(path, "--weights", device)
        if not isinstance(checkpoint, dict) or checkpoint.get("format") != REFINER_FORMAT:
            raise ValueError(f"--weights {path}: not a residual-refiner checkpoint (`ums align-train --model refiner`)")
        config, state = checkpoint["config"], checkpoint["state_dict"]
    model = ResidualRefiner(**config)
    model.load_state_dict(state)
    return model.to(device).eval()


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


def load_matcher(path: str | Path | None, device: str | torch.device = "cpu") -> DenseMatcher:
    """The dense matcher saved at ``path`` (``ums align --weights``)."""
    if path is None:
        raise FileNotFoundError("the learned registration needs its weights: pass --weights PATH "
                                "(config key `weights`), a checkpoint written by `ums align-train`")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--weights {path}: no such file (train one with `ums align-train`)")
    checkpoint = read_torch(path, "--weights", device)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"--weights {path}: not a dense-matcher checkpoint written by `ums align-train`")
    # checkpoints from before the readout option hold the published one
    model = DenseMatcher(**{"readout": "regress", **checkpoint["config"]})
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval()


def training_state_path(out: Path) -> Path:
    return Path(out).with_suffix(".training-state.pt")
