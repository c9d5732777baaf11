"""AdamW parameter groups with layer-wise LR decay, and the per-step LR application.

Layer ids: the embeddings (patch_embed, cls/register tokens, pos_embed) are layer 0, block i is
layer i + 1, everything after the last block (final norm, heads, exit classifiers) is layer
depth + 1. A group's LR is ``lr * layer_decay ** (depth + 1 - layer)`` (BEiT / MAE fine-tuning);
the weight-decay split is pretraining's (no decay on biases and 1-D parameters).
"""

from __future__ import annotations

import re

import torch
from torch import nn

from ..maths.optim import adamw, takes_weight_decay

_EMBED = ("patch_embed", "cls_token", "reg_token", "pos_embed")
_BLOCK = re.compile(r"(?:^|\.)blocks\.(\d+)\.")


def layer_id(name: str, depth: int) -> int:
    """Layer of a parameter of the fine-tuning model (names ``vit.*`` and ``exits.*``)."""
    short = name[4:] if name.startswith("vit.") else None
    if short is not None and short.split(".")[0] in _EMBED:
        return 0
    m = _BLOCK.search(name)
    if short is not None and m:
        return int(m.group(1)) + 1
    return depth + 1


def layer_decay_groups(model: nn.Module, depth: int, layer_decay: float) -> list[dict]:
    """One group per (layer, with/without weight decay) pair, each with its ``lr_scale``."""
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        layer = layer_id(name, depth)
        decay = takes_weight_decay(name, p)
        g = groups.setdefault((layer, decay), {"params": [], "apply_wd": decay, "layer": layer,
                                               "lr_scale": layer_decay ** (depth + 1 - layer)})
        g["params"].append(p)
    return [groups[k] for k in sorted(groups)]


def build_layerwise_optimizer(model: nn.Module, depth: int, layer_decay: float,
                              device: torch.device) -> torch.optim.AdamW:
    """Pretraining's AdamW over the layer-decay groups; ``dinolite.maths.optim.set_schedule`` applies ``lr_scale``."""
    return adamw(layer_decay_groups(model, depth, layer_decay), device)
