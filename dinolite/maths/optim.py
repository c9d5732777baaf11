"""AdamW (or SGD) with DINO's parameter groups, per-step schedule application, clipping, last-layer freeze."""

from __future__ import annotations

import torch
from torch import nn


def takes_weight_decay(name: str, p: torch.Tensor) -> bool:
    """Weights decay; biases and 1-D parameters (norms, tokens' scales) do not."""
    return not (name.endswith(".bias") or p.ndim <= 1)


def param_groups(model: nn.Module) -> list[dict]:
    """Two groups: weights with decay; biases and 1-D parameters without."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if takes_weight_decay(name, p) else no_decay).append(p)
    return [{"params": decay, "apply_wd": True}, {"params": no_decay, "apply_wd": False, "weight_decay": 0.0}]


def backbone_decay_groups(model: nn.Module, backbone_scale: float, layer_decay: float) -> list[dict]:
    """DINO's two groups, with the backbone's parameters (``backbone.*``) at ``backbone_scale`` of the LR times
    ``layer_decay ** (depth - i)`` for block i (the embeddings count as block -1, the final norm as the top):
    a pretrained backbone continued under fresh heads moves less, its first layers least (fine-tuning's rule)."""
    names = [n for n, _ in model.named_parameters()]
    blocks = [int(n.split(".")[2]) for n in names if n.startswith("backbone.blocks.")]
    depth = max(blocks) + 1 if blocks else 0
    groups: dict[tuple[float, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        scale = 1.0
        if name.startswith("backbone."):
            parts = name.split(".")
            layer = int(parts[2]) if parts[1] == "blocks" else (depth if parts[1] in ("norm", "fc_norm") else -1)
            scale = backbone_scale * layer_decay ** (depth - layer)
        decay = takes_weight_decay(name, p)
        group = groups.setdefault((scale, decay), {"params": [], "apply_wd": decay, "lr_scale": scale})
        group["params"].append(p)
    return [groups[k] for k in sorted(groups, key=lambda k: (-k[0], not k[1]))]


def adamw(groups: list[dict], device: torch.device) -> torch.optim.AdamW:
    """AdamW over ``groups`` (LR and WD are set every step by :func:`set_schedule`); fused kernels on CUDA."""
    fused = device.type == "cuda"
    return torch.optim.AdamW(groups, lr=0.0, weight_decay=0.0, fused=fused, foreach=not fused)


def build_optimizer(model: nn.Module, device: torch.device, kind: str = "adamw", backbone_scale: float = 1.0,
                    layer_decay: float = 1.0) -> torch.optim.Optimizer:
    """AdamW (DINO's ViT recipes) or SGD with momentum 0.9 (DINO's ResNet-50 command), DINO's two parameter groups
    (split by LR scale when the backbone learns slower: :func:`backbone_decay_groups`)."""
    slower = backbone_scale != 1.0 or layer_decay != 1.0
    groups = backbone_decay_groups(model, backbone_scale, layer_decay) if slower else param_groups(model)
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=0.0, momentum=0.9, weight_decay=0.0, foreach=True)
    return adamw(groups, device)


def set_schedule(optimizer: torch.optim.Optimizer, lr: float, weight_decay: float) -> None:
    """This step's LR (times a group's ``lr_scale``, e.g. layer-wise decay) and weight decay."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
        group["weight_decay"] = weight_decay if group["apply_wd"] else 0.0


def cancel_last_layer_grads(head_last_layer: nn.Module, frozen: bool) -> None:
    """Drop the last layer's gradients while it is ``frozen`` (AdamW then skips it): the first
    ``optim.freeze_last_layer`` epochs of a run.

    DINO freezes it at the start because an early, noisy last layer makes training unstable.
    """
    if frozen:
        for p in head_last_layer.parameters():
            p.grad = None
