"""A backbone-only ``model.init`` source, whatever its layout, as timm weights plus dinolite's ``model.*``
architecture fields; and its weights fitted to the recipe's model (position embeddings resized to the crops,
a 3-channel patch embedding summed for 1-channel data).

Layouts: a dinolite export folder (or timm ``local-dir`` folder with dinolite's fields), a ``.safetensors`` with
dinolite's ``arch`` / ``timm_kwargs`` metadata (a run's ``teacher_backbone.safetensors``), a bare timm ViT state
dict (``.safetensors`` or ``.pth``; 64-dimensional heads assumed), an official DINO or DINOv2 backbone ``.pth``,
and a Hugging Face ``transformers`` folder (ViT, DINOv2, DINOv2 with registers). Nothing runs pickled code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from timm.layers import resample_abs_pos_embed
from torch import Tensor, nn

from ..errors import UserError
from ..maths.models import VIT_ONLY
from ..statedict import key_problems
from ..weights import EXPORT_JSON, read_weights_file, resolve, strip_prefixes
from . import dinov2

CHANNELS_NOTE = ("its 3-channel patch embedding summed over the channels (the same as the grey image repeated "
                 "in 3 channels)")


@dataclass
class Backbone:
    """A backbone's timm weights (at the source's own grid and channels) and its architecture."""

    fields: dict  # model.arch and the ViT fields of model.* (None: timm's default)
    state: dict[str, Tensor]
    source: Path
    kind: str  # "dinolite-export", "timm", "dino-official", "dinov2-official", "hf-vit", "hf-dinov2", ...
    dropped: list[str] = field(default_factory=list)  # keys of the file that are not part of the backbone


def _from_state(state: dict, path: Path) -> Backbone:
    """A bare state dict: DINOv2's official layout, or timm's names (DINO's official backbones have them)."""
    state = strip_prefixes(state)
    if dinov2.is_dinov3(state):
        raise UserError(f"{path} is a DINOv3 backbone: timm builds DINOv3 as an Eva model (rotary embeddings), "
                        f"which dinolite's DINO step does not train; use a DINOv2, DINO, timm or HF ViT")
    if "cls_token" not in state or "patch_embed.proj.weight" not in state or "blocks.0.mlp.fc1.weight" not in state:
        raise UserError(f"{path} is not a ViT backbone dinolite reads (no cls_token / patch_embed.proj.weight / "
                        f"blocks.0.mlp.fc1.weight; first keys: {list(state)[:4]}): pass an export or a run")
    if dinov2.is_dinov2(state):
        timm_state, dropped = dinov2.to_timm(state, path)
        return Backbone(dinov2.vit_fields(timm_state), timm_state, path, "dinov2-official", dropped)
    return Backbone(dinov2.vit_fields(state), state, path, "timm")


def read_backbone(path: Path, obj=None, meta: dict | None = None) -> Backbone:
    """The backbone at ``path`` (``obj`` / ``meta``: the file, already read by ``weights.read_weights_file``)."""
    path = Path(path)
    if path.is_dir() or path.name == EXPORT_JSON or (meta or {}).get("timm_kwargs"):
        spec = resolve(path)
        fields = {"arch": spec.arch, **{k: spec.kwargs.get(k) for k in VIT_ONLY}}
        return Backbone(fields, spec.state_dict, spec.source, spec.kind)  # exports and HF folders (weights.resolve)
    if obj is None:
        obj, meta = read_weights_file(path)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict", obj.get("model")), dict):
        obj = obj.get("state_dict", obj.get("model"))
    if not (isinstance(obj, dict) and obj and all(isinstance(v, Tensor) for v in obj.values())):
        raise UserError(f"{path} holds no dict of tensors: pass a backbone's weights, an export or a run")
    return _from_state(obj, path)


def _grid(tokens: int, path: Path) -> tuple[int, int]:
    side = round(tokens ** 0.5)
    if side * side != tokens:
        raise UserError(f"{path}: its {tokens} position embeddings are not a square grid")
    return side, side


def fit_state(backbone: Backbone, model: nn.Module) -> tuple[dict[str, Tensor], list[str]]:
    """``backbone``'s weights for ``model`` (a timm backbone built from the recipe), checked key by key: the
    position embeddings resized to the model's grid, a 3-channel patch embedding summed for 1-channel data.
    Returns them and what was changed, for the banner."""
    own, state, notes = model.state_dict(), dict(backbone.state), []
    proj = state.get("patch_embed.proj.weight")
    want = own.get("patch_embed.proj.weight")
    if proj is not None and want is not None and proj.shape[1] != want.shape[1]:
        if proj.shape[1] == 3 and want.shape[1] == 1:
            state["patch_embed.proj.weight"] = proj.sum(dim=1, keepdim=True)
            notes.append(CHANNELS_NOTE)
        else:
            raise UserError(f"model.init={backbone.source} takes {proj.shape[1]}-channel images and the data have "
                            f"{want.shape[1]}: set augment.mean/std to the source's channels")
    pos = state.get("pos_embed")
    if pos is not None and "pos_embed" in own and pos.shape != own["pos_embed"].shape:
        vit: Any = model  # a timm VisionTransformer (patch_embed, no_embed_class are timm's attributes)
        prefix = 0 if getattr(vit, "no_embed_class", False) else int(getattr(vit, "num_prefix_tokens", 1))
        old = _grid(pos.shape[1] - prefix, backbone.source)
        new = tuple(vit.patch_embed.grid_size)
        with torch.no_grad():
            state["pos_embed"] = resample_abs_pos_embed(pos.float(), list(new), list(old), num_prefix_tokens=prefix,
                                                        verbose=False).to(pos.dtype)
        notes.append(f"position embeddings resized from a {old[0]} x {old[1]} to a {new[0]} x {new[1]} grid")
    problems = key_problems(own, state)
    if problems:
        raise UserError(f"model.init={backbone.source} does not fit the backbone built from it ({problems}); "
                        f"pass an unmodified {backbone.kind} file")
    return state, notes


def describe(backbone: Backbone) -> str:
    """The architecture in a few words, for the banner."""
    f = backbone.fields
    if f.get("embed_dim") is None:
        return f["arch"]
    extra = "".join([f", {f['reg_tokens']} registers" if f.get("reg_tokens") else "",
                     ", layer scale" if f.get("init_values") is not None else ""])
    return (f"ViT patch {f['patch_size']}, width {f['embed_dim']}, depth {f['depth']}, {f['num_heads']} heads{extra}")


def is_hf_or_export_dir(path: Path) -> bool:
    """A folder that holds a backbone (an HF or export folder), not a run directory."""
    if not (path / EXPORT_JSON).is_file():
        return False
    try:
        return isinstance(json.loads((path / EXPORT_JSON).read_text()), dict)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return True  # read_backbone says what is wrong with it
