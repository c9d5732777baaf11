"""Hugging Face ``transformers`` model folders (``config.json`` + ``model.safetensors``) of ViT, DINOv2 and
DINOv2-with-registers models, read into timm's names and written from a timm ViT (``dinolite export --hf``).

Both the names of the released checkpoints (``encoder.layer.N.attention.attention.query``, ...) and those of
transformers 5 (``attention.q_proj``, ViT's ``layers.N``) are read; folders are written with the released names,
which every transformers version loads. ``transformers`` itself is needed only to check a written folder.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import UserError

HF_MISSING = "Hugging Face folders need the transformers package: pip install 'dinolite[hf]'"
KINDS = {"vit": "ViTModel", "dinov2": "Dinov2Model", "dinov2_with_registers": "Dinov2WithRegistersModel"}
# Released (and transformers 5) names -> timm's, applied in this order to each key.
_RENAMES = [
    (r"^(?:encoder\.layer|layers)\.(\d+)\.", r"blocks.\1."),
    (r"\.attention\.(?:attention\.query|q_proj)\.", ".attn.q."),
    (r"\.attention\.(?:attention\.key|k_proj)\.", ".attn.k."),
    (r"\.attention\.(?:attention\.value|v_proj)\.", ".attn.v."),
    (r"\.attention\.(?:output\.dense|o_proj)\.", ".attn.proj."),
    (r"\.layernorm_before\.", ".norm1."), (r"\.layernorm_after\.", ".norm2."),
    (r"\.intermediate\.dense\.", ".mlp.fc1."), (r"\.output\.dense\.", ".mlp.fc2."),
    (r"\.layer_scale(\d)\.lambda1$", r".ls\1.gamma"),
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^layernorm\.", "norm."),
]
DROPPED = ("pooler.", "embeddings.mask_token")  # a ViT's pooler and DINOv2's mask token: not part of the backbone


def read_config(folder: Path) -> dict:
    """The folder's config.json, checked to be a model type dinolite maps exactly."""
    try:
        info = json.loads((folder / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{folder / 'config.json'} is not readable JSON ({str(err).splitlines()[0]})") from None
    kind = info.get("model_type") if isinstance(info, dict) else None
    if kind not in KINDS:
        raise UserError(f"{folder}: Hugging Face model_type {kind!r} is not read by dinolite (only "
                        f"{', '.join(KINDS)}): convert it to timm weights first")
    if info.get("use_swiglu_ffn") or info.get("hidden_act", "gelu") != "gelu" or info.get("qkv_bias") is False:
        raise UserError(f"{folder}: a SwiGLU MLP, another activation than gelu or no qkv bias has no exact timm "
                        f"VisionTransformer counterpart in dinolite: use a ViT-S/B/L DINOv2 or a plain ViT")
    return info


def is_hf_folder(folder: Path) -> bool:
    """A folder whose config.json names a transformers ``model_type`` (and no dinolite ``timm_model``)."""
    try:
        info = json.loads((folder / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(info, dict) and "model_type" in info and "timm_model" not in info


def model_fields(info: dict) -> dict:
    """The ViT fields of dinolite's ``model.*`` for this config (architecture from the file)."""
    dim = int(info["hidden_size"])
    ratio = info["intermediate_size"] / dim if info["model_type"] == "vit" else float(info.get("mlp_ratio", 4))
    fields = dict(arch="vit_base_patch16_224", patch_size=int(info["patch_size"]), embed_dim=dim,
                  depth=int(info["num_hidden_layers"]), num_heads=int(info["num_attention_heads"]), mlp_ratio=ratio)
    if info["model_type"] != "vit":
        fields["init_values"] = float(info.get("layerscale_value", 1.0))
    if info["model_type"] == "dinov2_with_registers":
        fields.update(reg_tokens=int(info.get("num_register_tokens", 4)), no_embed_class=True)
    return fields


def to_timm(state: dict[str, Tensor], info: dict, source: Path) -> tuple[dict[str, Tensor], list[str]]:
    """A transformers state dict under timm's names (q, k, v fused; registers' layout converted), and the keys
    dropped on purpose. A key that maps to nothing is a one-line UserError naming it."""
    prefix = info["model_type"].replace("_with_registers", "") + "."
    out: dict[str, Tensor] = {}
    dropped = []
    for key, value in state.items():
        key = key[len(prefix):] if key.startswith(prefix) else key  # a task model's backbone (vit., dinov2.)
        if key.startswith(DROPPED):
            dropped.append(key)
            continue
        new = key
        for pattern, repl in _RENAMES:
            new = re.sub(pattern, repl, new)
        if new.startswith("embeddings."):
            new = {"embeddings.cls_token": "cls_token", "embeddings.position_embeddings": "pos_embed",
                   "embeddings.register_tokens": "reg_token"}.get(new, new)
        if new == key and not new.startswith(("cls_token", "pos_embed", "reg_token")):
            raise UserError(f"{source}: key {key} has no timm counterpart (not a {KINDS[info['model_type']]} "
                            f"weight): remove it or convert the model first")
        out[new] = value
    for block in sorted({k.split(".")[1] for k in out if k.startswith("blocks.")}, key=int):
        for part in ("weight", "bias"):
            names = [f"blocks.{block}.attn.{x}.{part}" for x in "qkv"]
            if all(n in out for n in names):
                out[f"blocks.{block}.attn.qkv.{part}"] = torch.cat([out.pop(n) for n in names])
    if "reg_token" in out and "pos_embed" in out:  # registers: timm's no_embed_class layout (as timm's dinov2)
        out["cls_token"] = out["cls_token"] + out["pos_embed"][:, :1]
        out["pos_embed"] = out["pos_embed"][:, 1:]
    return out, dropped


def from_timm(vit: Any, in_chans: int) -> tuple[dict, dict[str, Tensor]]:
    """``(config.json, state dict)`` of the transformers model equal to the timm ViT ``vit``; a ViT that has no
    exact transformers counterpart is a one-line UserError saying why."""
    from timm.models.vision_transformer import VisionTransformer

    if not isinstance(vit, VisionTransformer):
        raise UserError("--hf writes timm VisionTransformers only (this backbone is not one): export it without --hf")
    blocks: list[Any] = list(vit.blocks)
    block = blocks[0]
    ls = not isinstance(block.ls1, torch.nn.Identity)
    regs = vit.num_reg_tokens
    why = [reason for bad, reason in (
        (vit.cls_token is None or vit.global_pool != "token", "no class token feature"),
        (not isinstance(vit.norm_pre, torch.nn.Identity) or not isinstance(vit.fc_norm, torch.nn.Identity),
         "a pre-norm or fc-norm"),
        (not isinstance(block.attn.q_norm, torch.nn.Identity), "q/k norms"),
        (block.attn.qkv.bias is None, "no qkv bias"),
        (type(block.mlp).__name__ != "Mlp" or not isinstance(block.mlp.act, torch.nn.GELU), "a non-GELU MLP"),
        (abs(float(getattr(vit.norm, "eps", 1e-6)) - 1e-6) > 1e-12, "a LayerNorm eps other than 1e-6"),
    ) if bad]
    if why:
        raise UserError(f"this ViT has {why[0]}, which transformers' ViT / DINOv2 models lack: export it without --hf")
    state = {k: v.detach().cpu().clone() for k, v in vit.state_dict().items()}
    dim, grid = vit.embed_dim, vit.patch_embed.grid_size
    pos, cls = state.pop("pos_embed"), state.pop("cls_token")
    if regs:  # transformers: the class token has a position embedding, the registers none
        if vit.no_embed_class:
            pos = torch.cat([torch.zeros_like(cls), pos], dim=1)
        else:  # timm gave the registers their own: folded into the (constant) register tokens
            state["reg_token"] = state["reg_token"] + pos[:, 1:1 + regs]
            pos = torch.cat([pos[:, :1], pos[:, 1 + regs:]], dim=1)
    elif vit.no_embed_class:
        pos = torch.cat([torch.zeros_like(cls), pos], dim=1)
    kind = "dinov2_with_registers" if regs else "dinov2" if ls else "vit"
    out = {"embeddings.cls_token": cls, "embeddings.position_embeddings": pos}
    if kind != "vit":
        out["embeddings.mask_token"] = torch.zeros(1, dim)
    if regs:
        out["embeddings.register_tokens"] = state.pop("reg_token")
    attn, mlp_in, mlp_out = (("attention.output.dense", "intermediate.dense", "output.dense") if kind == "vit"
                             else ("attention.output.dense", "mlp.fc1", "mlp.fc2"))
    norms = ("layernorm_before", "layernorm_after") if kind == "vit" else ("norm1", "norm2")
    for key, value in state.items():
        m = re.match(r"blocks\.(\d+)\.(.+)$", key)
        if not m:
            new = {"patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
                   "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
                   "norm.weight": "layernorm.weight", "norm.bias": "layernorm.bias"}[key]
            out[new] = value
            continue
        i, rest = m.groups()
        head = f"encoder.layer.{i}."
        if rest.startswith("attn.qkv."):
            part = rest.rsplit(".", 1)[1]
            for name, chunk in zip(("query", "key", "value"), value.chunk(3), strict=True):
                out[f"{head}attention.attention.{name}.{part}"] = chunk.contiguous()
            continue
        for old, new in (("attn.proj.", attn + "."), ("norm1.", norms[0] + "."), ("norm2.", norms[1] + "."),
                         ("mlp.fc1.", mlp_in + "."), ("mlp.fc2.", mlp_out + "."),
                         ("ls1.gamma", "layer_scale1.lambda1"), ("ls2.gamma", "layer_scale2.lambda1")):
            if rest.startswith(old):
                out[head + new + rest[len(old):]] = value
                break
        else:
            raise UserError(f"timm key {key} has no transformers counterpart: export it without --hf")
    hidden = block.mlp.fc1.out_features
    config = {"model_type": kind, "architectures": [KINDS[kind]], "hidden_size": dim, "num_hidden_layers": len(blocks),
              "num_attention_heads": block.attn.num_heads, "hidden_act": "gelu", "layer_norm_eps": 1e-6,
              "image_size": int(grid[0] * vit.patch_embed.patch_size[0]), "patch_size": vit.patch_embed.patch_size[0],
              "num_channels": in_chans, "qkv_bias": True, "hidden_dropout_prob": 0.0,
              "attention_probs_dropout_prob": 0.0, "initializer_range": 0.02}
    if kind == "vit":
        config["intermediate_size"] = hidden
        config["add_pooling_layer"] = False
    else:
        if hidden % dim:
            raise UserError(f"transformers' DINOv2 takes a whole MLP ratio, not {hidden / dim:g}: "
                            f"export it without --hf")
        config.update(mlp_ratio=hidden // dim, layerscale_value=1.0, use_swiglu_ffn=False, drop_path_rate=0.0)
        if not ls:  # a plain ViT with registers: layer scale 1 is the identity
            for i in range(len(blocks)):
                for j in (1, 2):
                    out[f"encoder.layer.{i}.layer_scale{j}.lambda1"] = torch.ones(dim)
    if regs:
        config["num_register_tokens"] = regs
    return config, out
