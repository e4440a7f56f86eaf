"""Checkpoints: ours (safetensors + a JSON config beside it) and the official one.

The official ``TSJNet.pth`` is a dict of four state dicts (``DIDF_Encoder``, ``DIDF_Decoder``,
``BaseFuseLayer``, ``DetailFuseLayer``; keys in tests/tsjnet/model/official_state_dict_keys.txt). Its
module names are renamed to ours rule by rule below; an ``attn.rpb`` key means it was trained with
natten <= 0.15 and sets ``rel_pos_bias``. Pickles are only ever read with ``weights_only=True``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from tsjnet.model.config import TSJNetConfig
from tsjnet.model.tsjnet import TSJNet
from ums.core.atomic import write_bytes, write_text

OFFICIAL_PARTS = {"DIDF_Encoder": "encoder.", "DIDF_Decoder": "decoder.", "BaseFuseLayer": "nat_fuse.",
                  "DetailFuseLayer": "mfm_fuse."}

# applied in order to "<part>.<official key>" after the part prefix became ours
_RENAMES = [
    (r"^encoder\.patch_embed\.proj\.", "encoder.stem_proj."),
    (r"^encoder\.conv([123])\.0\.", lambda m: f"encoder.refine.{2 * (int(m[1]) - 1)}."),
    (r"^encoder\.baseFeature\.", "encoder.nat_branch."),
    (r"^encoder\.detailFeature\.", "encoder.mfm_branch."),
    (r"^decoder\.spa\.conv\.", "decoder.attention.heads."),
    (r"^decoder\.reduce_channel\.", "decoder.reduce."),
    (r"^decoder\.output\.", "decoder.head."),
    # ResNeSt trunks (encoder and decoder)
    (r"\.ResNest\.deep_stem\.", ".trunk.stem."),
    (r"\.ResNest\.layer1\.(\d+)\.conv1\.", r".trunk.blocks.\1.reduce."),
    (r"\.ResNest\.layer1\.(\d+)\.conv2\.", r".trunk.blocks.\1.split_attention."),
    (r"\.ResNest\.layer1\.(\d+)\.conv3\.", r".trunk.blocks.\1.expand."),
    (r"\.ResNest\.layer1\.(\d+)\.shortcut\.", r".trunk.blocks.\1.shortcut."),
    # NAT branches: channel LayerNorm + NAT-Mini
    (r"(nat_branch|nat_fuse)\.norm1\.body\.", r"\1.norm."),
    (r"(nat_branch|nat_fuse)\.attn\.", r"\1.nat."),
    (r"\.nat\.patch_embed\.", ".nat.tokenizer."),
    (r"\.nat\.conv1\.0\.", ".nat.head.0."),
    (r"\.nat\.conv2\.0\.", ".nat.head.2."),
    (r"\.nat\.transposed_conv1\.", ".nat.head.4."),
    (r"\.nat\.transposed_conv2\.", ".nat.head.5."),
    (r"\.nat\.transposed_conv3\.", ".nat.head.6."),
    # MFM branches
    (r"(mfm_branch|mfm_fuse)\.convp1\.", r"\1.residual_in."),
    (r"(mfm_branch|mfm_fuse)\.coa\.conv\.0\.", r"\1.coa."),
    (r"(mfm_branch|mfm_fuse)\.convp2\.", r"\1.residual_mid."),
    (r"(mfm_branch|mfm_fuse)\.conv1\.1\.", r"\1.residual_out."),
    (r"(mfm_branch|mfm_fuse)\.conv4\.", r"\1.salient_conv."),
    (r"(mfm_branch|mfm_fuse)\.fc1\.", r"\1.channel_fc1."),
    (r"(mfm_branch|mfm_fuse)\.fc2\.", r"\1.channel_fc2."),
    (r"(mfm_branch|mfm_fuse)\.conv_transpose\.", r"\1.upsample."),
    (r"(mfm_branch|mfm_fuse)\.spa\.conv\.", r"\1.unused_spatial_attention.heads."),
]
# official modules that never run (docs/reference/tsjnet.md §6.11): kept only with ``official_layout``
_UNUSED = re.compile(r"(\.nat\.(norm|avgpool|conv_head)\.|\.unused_spatial_attention\.)")


def official_key_to_ours(part: str, key: str) -> str:
    """Our name for ``key`` of the official sub-dict ``part`` (with or without DataParallel's
    ``module.`` and the part's own prefix)."""
    if part not in OFFICIAL_PARTS:
        raise KeyError(f"unknown official checkpoint part {part!r}; expected one of {sorted(OFFICIAL_PARTS)}")
    for prefix in ("module.", f"{part}."):
        key = key.removeprefix(prefix)
    name = OFFICIAL_PARTS[part] + key
    for pattern, replacement in _RENAMES:
        name = re.sub(pattern, replacement, name)
    return name


def is_unused(name: str) -> bool:
    return bool(_UNUSED.search(name))


def split_official(checkpoint: Mapping) -> dict[str, Mapping[str, torch.Tensor]]:
    """The four official sub-dicts, from the nested checkpoint or from one flat state dict."""
    if all(part in checkpoint for part in OFFICIAL_PARTS):
        return {part: checkpoint[part] for part in OFFICIAL_PARTS}
    parts: dict[str, dict[str, torch.Tensor]] = {part: {} for part in OFFICIAL_PARTS}
    for key, value in checkpoint.items():
        part = next((p for p in OFFICIAL_PARTS if key.removeprefix("module.").startswith(p + ".")), None)
        if part is None:
            raise ValueError(f"key {key!r} belongs to none of the official parts {sorted(OFFICIAL_PARTS)}: "
                             "not a TSJNet checkpoint")
        parts[part][key] = value
    return parts


def convert_official_state(checkpoint: Mapping, keep_unused: bool = False
                           ) -> tuple[dict[str, torch.Tensor], TSJNetConfig, list[str]]:
    """(our state dict, the config it needs, the official keys dropped as never used)."""
    state: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for part, sub_state in split_official(checkpoint).items():
        for key, tensor in sub_state.items():
            name = official_key_to_ours(part, key)
            if is_unused(name) and not keep_unused:
                dropped.append(key)
                continue
            state[name] = tensor.detach().clone().contiguous()
    config = TSJNetConfig(rel_pos_bias=any(name.endswith(".attn.rpb") for name in state),
                          official_layout=keep_unused)
    return state, config, dropped


def load_official(path: str | Path, keep_unused: bool = False) -> tuple[TSJNet, list[str]]:
    """The official checkpoint as a ready TSJNet (strict loading: every tensor accounted for)."""
    checkpoint = torch.load(Path(path), map_location="cpu", weights_only=True)
    state, config, dropped = convert_official_state(checkpoint, keep_unused)
    model = TSJNet(config)
    load_strict(model, state, Path(path))
    return model, dropped


def load_strict(model: TSJNet, state: Mapping[str, torch.Tensor], source: Path) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{source}: checkpoint does not fit the configured TSJNet; missing {missing[:5]} "
                         f"({len(missing)}), unexpected {unexpected[:5]} ({len(unexpected)})")


def config_path_for(weights: Path) -> Path:
    return weights.with_suffix(".json")


def save_checkpoint(model: TSJNet, path: str | Path, metadata: Mapping[str, str] | None = None) -> Path:
    """``path``.safetensors (weights) + ``path``.json (the config that rebuilds the network)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_name(path.name + ".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    write_bytes(path, save_safetensors(state, metadata=dict(metadata or {})))
    write_text(config_path_for(path), json.dumps({"model": model.config.model_dump(mode="json")}, indent=2) + "\n")
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> TSJNet:
    """Rebuild a TSJNet from our checkpoint (its JSON config beside it)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"TSJNet weights not found: {path} (pass --weights PATH to a .safetensors "
                                "written by `tsjnet train` or `tsjnet convert`)")
    config_file = config_path_for(path)
    if not config_file.is_file():
        raise FileNotFoundError(f"{path}: its config {config_file.name} is missing beside it")
    model = TSJNet(TSJNetConfig.load(config_file))
    load_strict(model, load_safetensors(path.read_bytes()), path)
    return model.to(map_location)
