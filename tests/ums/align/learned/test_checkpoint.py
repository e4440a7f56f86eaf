"""``--weights`` files: a missing, unreadable or foreign file is named in one line, and a checkpoint
of the dense matcher (research code in bench/ now) says where it is read instead."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from tests.ums.align.learned.conftest import dense_checkpoint
from ums.align.learned.checkpoint import export_refiner, load_refiner, save_checkpoint
from ums.align.learned.refiner import ResidualRefiner


def test_bad_weights_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="--weights .*missing.pt: no such file"):
        load_refiner(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        load_refiner(junk)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ValueError, match=r"not a residual-refiner checkpoint \(format None"):
        load_refiner(foreign)
    junk_safetensors = tmp_path / "junk.safetensors"
    junk_safetensors.write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_refiner(junk_safetensors)
    foreign_safetensors = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(2)}, str(foreign_safetensors))
    with pytest.raises(ValueError, match=r"not a residual-refiner checkpoint \(format None"):
        load_refiner(foreign_safetensors)


def test_a_dense_matcher_checkpoint_gets_one_line_saying_where_it_went(tmp_path):
    path = dense_checkpoint(tmp_path / "matcher.pt")
    with pytest.raises(ValueError) as error:
        load_refiner(path)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"--weights {path}: a dense-matcher checkpoint")
    assert "research code in bench/" in message and f"bench/registration.py --weights {path}" in message


def test_a_refiner_checkpoint_and_its_export_load_to_the_same_net(tmp_path):
    torch.manual_seed(0)
    model = ResidualRefiner(width=0.25, spread=0.0)
    checkpoint = save_checkpoint(model, tmp_path / "r.pt", {"steps": 1})
    assert torch.load(checkpoint, weights_only=True)["format"] == "ums-residual-refiner"
    for loaded in (load_refiner(checkpoint), load_refiner(export_refiner(checkpoint, tmp_path / "r.safetensors"))):
        assert loaded.config == model.config and not loaded.training
        for name, tensor in model.state_dict().items():
            assert torch.equal(tensor, loaded.state_dict()[name]), name
