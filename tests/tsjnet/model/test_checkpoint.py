"""Official checkpoint conversion (a synthetic checkpoint with every official key and shape) and our
safetensors + JSON checkpoints."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from tsjnet.model import TINY, TSJNet, TSJNetConfig
from tsjnet.model.checkpoint import (
    OFFICIAL_PARTS,
    convert_official_state,
    load_checkpoint,
    load_official,
    official_key_to_ours,
    save_checkpoint,
)

OFFICIAL_KEYS = Path(__file__).with_name("official_state_dict_keys.txt")


def official_layout(with_rpb: bool = True) -> list[tuple[str, str, tuple[int, ...]]]:
    """(part, key, shape) for every tensor of the released checkpoint (docs/reference/tsjnet.md appendix)."""
    rows = []
    for line in OFFICIAL_KEYS.read_text().splitlines():
        if "\t" not in line:
            continue
        key, shape = line.split("\t")
        if key.endswith(".attn.rpb") and not with_rpb:
            continue
        rows.append((key.split(".")[0], key, tuple(int(s) for s in shape.strip("()").split(",") if s.strip())))
    return rows


def synthetic_official(with_rpb: bool = True, data_parallel: bool = False) -> dict:
    generator = torch.Generator().manual_seed(0)
    checkpoint = {part: {} for part in OFFICIAL_PARTS}
    for part, key, shape in official_layout(with_rpb):
        stored = key.replace(f"{part}.", "module.", 1) if data_parallel else key
        if key.endswith("num_batches_tracked"):
            checkpoint[part][stored] = torch.tensor(7)
        elif key.endswith("running_var"):
            checkpoint[part][stored] = torch.rand(shape, generator=generator) + 0.5
        else:
            checkpoint[part][stored] = torch.randn(shape, generator=generator) * 0.05
    return checkpoint


def test_the_layout_file_is_the_official_one():
    rows = official_layout()
    assert len(rows) == 816
    assert sum(1 for _, key, _ in rows if key.endswith(".attn.rpb")) == 36


@pytest.mark.parametrize("with_rpb", [True, False])
def test_every_official_tensor_lands_in_the_right_place(with_rpb):
    checkpoint = synthetic_official(with_rpb)
    state, config, dropped = convert_official_state(checkpoint, keep_unused=True)
    assert config.rel_pos_bias is with_rpb and config.official_layout and not dropped
    model = TSJNet(config)
    model.load_state_dict(state, strict=True)
    ours = model.state_dict()
    for part, sub_state in checkpoint.items():
        for key, tensor in sub_state.items():
            assert torch.equal(ours[official_key_to_ours(part, key)], tensor), key


def test_renames_follow_the_official_modules():
    assert official_key_to_ours("DIDF_Encoder", "DIDF_Encoder.conv2.0.weight") == "encoder.refine.2.weight"
    assert official_key_to_ours("DIDF_Encoder", "module.detailFeature.conv1.1.bias") == "encoder.mfm_branch.residual_out.bias"
    assert official_key_to_ours("BaseFuseLayer", "BaseFuseLayer.attn.transposed_conv3.weight") == "nat_fuse.nat.head.6.weight"
    assert (official_key_to_ours("DIDF_Decoder", "DIDF_Decoder.ResNest.layer1.0.conv2.fc2.1.running_var")
            == "decoder.trunk.blocks.0.split_attention.fc2.1.running_var")
    assert official_key_to_ours("DIDF_Decoder", "DIDF_Decoder.spa.conv.7.bias") == "decoder.attention.heads.7.bias"


def test_convert_drops_dead_modules_and_round_trips(tmp_path):
    checkpoint = synthetic_official(with_rpb=True, data_parallel=True)
    official_path = tmp_path / "TSJNet.pth"
    torch.save(checkpoint, official_path)
    model, dropped = load_official(official_path)
    assert len(dropped) == 2 * 6 + 2 * 16  # per NAT: norm, avgpool, conv_head (w + b); per MFM: 8 heads (w + b)
    assert not model.config.official_layout and model.config.rel_pos_bias
    saved = save_checkpoint(model, tmp_path / "converted")
    assert saved.suffix == ".safetensors" and saved.with_suffix(".json").is_file()
    assert json.loads(saved.with_suffix(".json").read_text())["model"]["rel_pos_bias"] is True
    reloaded = load_checkpoint(saved).eval()
    model.eval()
    torch.manual_seed(1)
    ir, vi = torch.rand(1, 1, 64, 64), torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(ir, vi).fused, reloaded(ir, vi).fused)


def test_flat_official_state_dict_is_accepted():
    nested = synthetic_official(with_rpb=False)
    flat = {key: tensor for sub in nested.values() for key, tensor in sub.items()}
    state, config, _ = convert_official_state(flat)
    TSJNet(config).load_state_dict(state, strict=True)


def test_bad_checkpoints_are_named(tmp_path):
    checkpoint = synthetic_official(with_rpb=False)
    del checkpoint["DIDF_Decoder"]["DIDF_Decoder.output.2.weight"]
    path = tmp_path / "broken.pth"
    torch.save(checkpoint, path)
    with pytest.raises(ValueError, match="broken.pth.*missing.*decoder.head.2.weight"):
        load_official(path)
    with pytest.raises(ValueError, match="not a TSJNet checkpoint"):
        convert_official_state({"backbone.weight": torch.zeros(1)})
    with pytest.raises(FileNotFoundError, match="--weights"):
        load_checkpoint(tmp_path / "absent.safetensors")


class Payload:
    def __reduce__(self):
        return (print, ("pickle code ran",))


def test_pickled_code_is_never_executed(tmp_path):
    path = tmp_path / "hostile.pth"
    path.write_bytes(pickle.dumps({"DIDF_Encoder": Payload()}))
    with pytest.raises(pickle.UnpicklingError):
        load_official(path)


def test_our_checkpoint_keeps_the_config(tmp_path):
    config = TSJNetConfig(**TINY, decoder_merge="sum")
    model = TSJNet(config)
    path = save_checkpoint(model, tmp_path / "tiny.safetensors", metadata={"epoch": "3"})
    assert load_checkpoint(path).config == config
