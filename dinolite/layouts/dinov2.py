"""The official DINOv2 backbone files (facebookresearch/dinov2 ``dinov2_vit*14[_reg4]_pretrain.pth``): timm's
names already, plus layer scale (``blocks.N.ls1.gamma``), ``register_tokens``, a ``mask_token`` and position
embeddings for 518 px (a 37 x 37 grid) that include the class token.

DINOv3's files are not read: timm (1.0.31) builds DINOv3 as ``timm.models.eva.Eva`` (rotary position
embeddings), not the VisionTransformer dinolite's DINO / iBOT step and exports use.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from ..errors import UserError

MARKS = ("register_tokens", "mask_token", "blocks.0.ls1.gamma")
DROPPED = ("mask_token",)  # iBOT's mask token of the DINOv2 run: not part of the backbone


def is_dinov2(state: dict) -> bool:
    """A bare DINOv2 state dict: timm-like names with one of DINOv2's own keys."""
    return "cls_token" in state and "patch_embed.proj.weight" in state and any(k in state for k in MARKS)


def is_dinov3(state: dict) -> bool:
    """DINOv3's backbone files hold rotary-embedding periods and storage tokens."""
    return any(k.startswith(("rope_embed.", "storage_tokens")) for k in state)


def vit_fields(state: dict[str, Tensor]) -> dict:
    """dinolite's ``model.*`` ViT fields of a timm-named ViT state dict (heads: 64 dimensions each, the rule
    of every DINO and DINOv2 ViT, since no file stores the number of heads)."""
    dim = int(state["cls_token"].shape[-1])
    fields = dict(arch="vit_base_patch16_224", patch_size=int(state["patch_embed.proj.weight"].shape[-1]),
                  embed_dim=dim, depth=1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks.")),
                  num_heads=max(1, dim // 64), mlp_ratio=state["blocks.0.mlp.fc1.weight"].shape[0] / dim)
    if "blocks.0.ls1.gamma" in state:
        fields["init_values"] = 1e-5  # any value builds layer scale; the file's gammas replace it
    if "reg_token" in state:
        fields.update(reg_tokens=int(state["reg_token"].shape[1]), no_embed_class=True)
    return fields


def to_timm(state: dict[str, Tensor], source: Path) -> tuple[dict[str, Tensor], list[str]]:
    """A DINOv2 state dict under timm's names (registers in timm's no_embed_class layout, as timm converts
    them), and the keys dropped on purpose."""
    if any(".mlp.w12." in k for k in state):
        raise UserError(f"{source}: a DINOv2 ViT-g (SwiGLU MLP) has no timm VisionTransformer counterpart in "
                        f"dinolite: use ViT-S/B/L")
    if any(k.startswith("blocks.") and k.split(".")[2].isdigit() for k in state):
        raise UserError(f"{source}: its blocks are chunked (blocks.C.I.*): save the model with block_chunks=0")
    out = {k: v for k, v in state.items() if k not in DROPPED}
    if "register_tokens" in out:
        out["reg_token"] = out.pop("register_tokens")
        out["cls_token"] = out["cls_token"] + out["pos_embed"][:, :1]
        out["pos_embed"] = out["pos_embed"][:, 1:]
    return out, [k for k in DROPPED if k in state]
