"""Backbone-only sources written by the tests themselves, from randomly initialised models of each layout."""

from __future__ import annotations

import json
from pathlib import Path

import timm
import torch
from safetensors.torch import save_file

from dinolite.layouts.hf import from_timm

# tiny: width 64 (one 64-dimensional head, the rule for files that do not store it), depth 2
TINY = dict(embed_dim=64, depth=2, num_heads=1, num_classes=0, dynamic_img_size=True)


def randomised(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """``model`` with every weight moved off timm's initial values (zeros and ones would hide mix-ups)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def tiny_vit(in_chans: int = 3, img_size: int = 28, patch: int = 7, **kw) -> torch.nn.Module:
    return randomised(timm.create_model("vit_base_patch16_224", pretrained=False, in_chans=in_chans,
                                        img_size=img_size, patch_size=patch, **{**TINY, **kw}))


def dinov2_official(path: Path, registers: bool, in_chans: int = 3) -> torch.nn.Module:
    """A tiny ViT with layer scale (and 4 registers) saved in the official DINOv2 layout at 518 px (a 37 x 37
    grid): ``register_tokens``, a ``mask_token``, class and patch position embeddings together. Returns the
    timm model it equals."""
    extra = dict(reg_tokens=4, no_embed_class=True) if registers else {}
    vit = tiny_vit(in_chans, img_size=518, patch=14, init_values=1e-5, **extra)
    state = {k: v.clone() for k, v in vit.state_dict().items()}
    if registers:
        state["register_tokens"] = state.pop("reg_token")
        cls_pos = 0.05 * torch.randn(1, 1, 64, generator=torch.Generator().manual_seed(3))
        state["pos_embed"] = torch.cat([cls_pos, state["pos_embed"]], dim=1)
        state["cls_token"] = state["cls_token"] - cls_pos  # DINOv2 adds it back: the same class token input
    state["mask_token"] = torch.zeros(1, 64)
    torch.save(state, path)
    return vit


def hf_folder(folder: Path, vit: torch.nn.Module, in_chans: int) -> Path:
    """``vit`` as a transformers model folder (config.json + model.safetensors), as save_pretrained writes it."""
    config, state = from_timm(vit, in_chans)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    return folder
