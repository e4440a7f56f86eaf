"""Dense-matcher files: the inference checkpoint (``--weights``) and the resumable training state.

Both are read with ``torch.load(weights_only=True)``: a hostile pickle is refused, never run.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch

from ums.align.learned.model import DenseMatcher
from ums.atomic import write_bytes

CHECKPOINT_FORMAT = "ums-dense-matcher"
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


def save_checkpoint(model: DenseMatcher, path: Path, training: dict) -> Path:
    return save_torch({"format": CHECKPOINT_FORMAT, "version": 1, "config": model.config,
                       "training": json.loads(json.dumps(training)), "state_dict": model.state_dict()}, path)


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
