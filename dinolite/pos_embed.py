"""Position embeddings at other image sizes, the way facebookresearch/dino computes them.

DINO's ViT resizes its learned grid of patch position embeddings with a bicubic ``interpolate`` by a
*scale factor* of ``(grid + 0.1) / old_grid`` (the 0.1 keeps the floor of the output size right),
without antialiasing, and leaves the class token's embedding as it is. timm resizes to a target *size*
(with antialiasing when it shrinks), which gives other values: an official checkpoint evaluated at
96 px then differs from the reference code by about 2 % in its CLS output. Official checkpoints are
therefore run with this interpolation (``dinolite.weights``: ``pos_interp="dino"``).
"""

from __future__ import annotations

import math
import types
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def dino_interpolate(pos_embed: Tensor, grid_h: int, grid_w: int) -> Tensor:
    """``pos_embed`` ``[1, 1 + N, D]`` (class token first, square grid of N) for a ``grid_h x grid_w`` grid."""
    n = pos_embed.shape[1] - 1
    if n == grid_h * grid_w and grid_h == grid_w:
        return pos_embed
    side, dim = int(math.sqrt(n)), pos_embed.shape[-1]
    grid = pos_embed[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
    scaled = F.interpolate(grid.float(), scale_factor=((grid_h + 0.1) / side, (grid_w + 0.1) / side),
                           mode="bicubic", align_corners=False)
    if scaled.shape[-2:] != (grid_h, grid_w):
        raise ValueError(f"DINO interpolation gave a {tuple(scaled.shape[-2:])} grid, not {(grid_h, grid_w)}")
    patches = scaled.to(pos_embed.dtype).permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, dim)
    return torch.cat([pos_embed[:, :1], patches], dim=1)


def _dino_pos_embed(self: Any, x: Tensor) -> Tensor:  # self: a timm VisionTransformer
    """Replacement of timm's ``VisionTransformer._pos_embed`` for a DINO-layout ViT (class token inside
    ``pos_embed``, no registers); ``x`` is the patch embedding, ``[B, h, w, D]`` with dynamic sizes."""
    if x.ndim == 4:
        b, h, w, d = x.shape
        x = x.reshape(b, h * w, d)
    else:
        b, n, d = x.shape
        h = w = int(math.sqrt(n))
    pos = dino_interpolate(self.pos_embed, h, w)
    x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1) + pos
    return self.pos_drop(x)


def use_dino_pos_embed(vit: nn.Module) -> nn.Module:
    """Make a timm ViT with DINO's layout interpolate its position embeddings as DINO does (in place)."""
    if getattr(vit, "reg_token", None) is not None or getattr(vit, "no_embed_class", False) or vit.cls_token is None:
        raise ValueError("DINO's interpolation applies to ViTs with a class token inside pos_embed and no registers")
    vit._pos_embed = types.MethodType(_dino_pos_embed, vit)  # type: ignore[assignment]  # shadows the method
    return vit
