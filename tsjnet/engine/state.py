"""Everything exact resume needs, in one file: model, optimizer, scheduler, scaler, trainable task
networks, counters and every random generator. Written atomically; read with weights_only=True."""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import torch

from ums.core.atomic import write_bytes


def rng_state() -> dict:
    numpy_state = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    random.setstate(_as_tuples(state["python"]))
    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value):
    # pickling round-trips Python's random state as nested tuples; keep it so
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def save_state(path: Path, **parts) -> Path:
    buffer = io.BytesIO()
    torch.save(parts, buffer)
    return write_bytes(Path(path), buffer.getvalue())


def load_state(path: Path) -> dict:
    return torch.load(Path(path), map_location="cpu", weights_only=True)
