"""The last block's CLS-to-patch attention of every head, and DINO's mask keeping a share (60 %) of its mass.

The attention probabilities are recomputed from the last block's input: a forward pre-hook on
``blocks[-1].attn`` keeps that input, and softmax(q k^T / sqrt(d)) is formed from the module's own
``qkv`` (and q/k norms). This works whether timm runs the fused (scaled_dot_product_attention)
kernel, which never materialises the probabilities, or the plain one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor, nn

from ..errors import UserError


def read_image(path: str | Path, channels: int) -> Tensor:
    """uint8 ``[C, H, W]`` (C = 1 grey or 3 RGB); an unreadable file is a one-line UserError."""
    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            arr = np.asarray(im).copy()
    except FileNotFoundError:
        raise UserError(f"image {path} not found") from None
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise UserError(f"cannot read image {path}: {str(err).splitlines()[0]}; pass a PNG or JPEG file") from None
    t = torch.from_numpy(arr)
    return t[None] if t.ndim == 2 else t.permute(2, 0, 1)


def prepare(image: Tensor, size: int, mean, std, crop_ratio: float = 1.0) -> Tensor:
    """The evaluation view: the centre square of ``crop_ratio`` of the shorter side, resized to ``size x size``
    (antialiased), scaled to [0, 1] and normalised: ``[1, C, size, size]``. A non-square image is cropped,
    never stretched."""
    h, w = image.shape[-2:]
    side = max(1, round(min(h, w) * crop_ratio))
    top, left = (h - side) // 2, (w - side) // 2
    x = image[None, :, top:top + side, left:left + side].float().div(255)
    x = nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    mean, std = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    return (x.clamp(0, 1) - mean) / std


@torch.no_grad()
def last_block_attention(backbone: nn.Module, x: Tensor) -> Tensor:
    """Attention probabilities ``[B, heads, N, N]`` of the last block, N = prefix + patch tokens."""
    vit: Any = backbone  # a timm ViT: blocks and the attention's qkv, norms and scale are timm's attributes
    attn = vit.blocks[-1].attn
    kept: list[Tensor] = []
    handle = attn.register_forward_pre_hook(lambda module, args: kept.append(args[0]))
    try:
        backbone(x)
    finally:
        handle.remove()
    tokens = kept[0]
    b, n, _ = tokens.shape
    qkv = attn.qkv(tokens).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
    return ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)


def cls_attention(backbone: nn.Module, x: Tensor) -> Tensor:
    """CLS-to-patch attention ``[heads, grid_h, grid_w]`` of one image ``x`` ``[1, C, H, W]``."""
    probs = last_block_attention(backbone, x)
    prefix = getattr(backbone, "num_prefix_tokens", 1)
    vit: Any = backbone  # a timm ViT
    patch: tuple[int, int] = vit.patch_embed.patch_size
    gh, gw = x.shape[-2] // patch[0], x.shape[-1] // patch[1]
    return probs[0, :, 0, prefix:].reshape(-1, gh, gw)


def mass_mask(attn: Tensor, keep: float = 0.6) -> Tensor:
    """Per head, the smallest set of highest-attention patches holding ``keep`` of the mass (DINO)."""
    flat = attn.flatten(1)
    values, order = flat.sort(dim=1, descending=True)
    before = values.cumsum(1) - values  # mass of the patches ranked above each one
    keep_sorted = before < keep * flat.sum(1, keepdim=True)
    mask = torch.zeros_like(keep_sorted).scatter_(1, order, keep_sorted)
    return mask.view_as(attn)


def render(image: Tensor, attn: Tensor, mask: Tensor, out: str | Path, title: str = "", keep: float = 0.6) -> Path:
    """PNG: the image and the mean of the heads (with its colour bar: attention probability), the mean over the
    image and the union of the heads' masks, then every head's map with its mask of ``keep`` of the mass."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heads = attn.shape[0]
    img = image.float().div(255)
    size = img.shape[-2:]
    up = nn.functional.interpolate(attn[None], size=size, mode="nearest")[0]
    up_mask = nn.functional.interpolate(mask[None].float(), size=size, mode="nearest")[0]
    shown = img[0].numpy() if img.shape[0] == 1 else img.permute(1, 2, 0).numpy()
    cmap = "gray" if img.shape[0] == 1 else None
    cols = heads + 2
    fig, axes = plt.subplots(2, cols, figsize=(1.9 * cols, 4.0), squeeze=False)
    for row in axes:
        for ax in row:
            ax.axis("off")
    axes[0, 0].imshow(shown, cmap=cmap)
    axes[0, 0].set_title("image", fontsize=8)
    mass = f"{keep:.0%}".replace("%", " %")
    top = float(up.max())  # one colour scale for every map, so heads compare
    mean_map = axes[0, 1].imshow(up.mean(0).numpy(), cmap="inferno", vmin=0, vmax=top)
    axes[0, 1].set_title("mean of heads", fontsize=8)
    fig.colorbar(mean_map, ax=axes[0, 1], fraction=0.046, pad=0.04).ax.tick_params(labelsize=6)
    axes[1, 0].imshow(shown, cmap=cmap)
    axes[1, 0].imshow(up_mask.amax(0).numpy(), cmap="viridis", alpha=0.5)
    axes[1, 0].set_title(f"{mass} mass, any head", fontsize=8)
    axes[1, 1].imshow(shown, cmap=cmap)
    axes[1, 1].imshow(up.mean(0).numpy(), cmap="inferno", alpha=0.6, vmin=0, vmax=top)
    axes[1, 1].set_title("mean over the image", fontsize=8)
    for h in range(heads):
        axes[0, h + 2].imshow(up[h].numpy(), cmap="inferno", vmin=0, vmax=top)
        axes[0, h + 2].set_title(f"head {h}", fontsize=8)
        axes[1, h + 2].imshow(shown, cmap=cmap)
        axes[1, h + 2].imshow(up_mask[h].numpy(), cmap="viridis", alpha=0.5)
        axes[1, h + 2].set_title(f"head {h}: {mass} mass", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
