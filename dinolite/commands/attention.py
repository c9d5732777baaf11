"""``dinolite attention``: last-block CLS attention maps of every head over an image, as a PNG."""

from __future__ import annotations

import argparse
from typing import Any


def run(args: argparse.Namespace) -> int:
    import torch

    from ..config import Config
    from ..errors import UserError
    from ..maths.models import is_vit_backbone
    from ..viz.attention import cls_attention, mass_mask, prepare, read_image, render
    from ..weights import resolve

    spec = resolve(args.target, args.checkpoint_key)
    backbone: Any = spec.build()  # a timm ViT: its attributes are timm's, untyped
    if not is_vit_backbone(backbone):
        raise UserError(f"attention maps need a ViT backbone and {args.target} holds a {spec.arch} "
                        f"({type(backbone).__name__}): pass a ViT run, checkpoint or export")
    in_chans = spec.kwargs.get("in_chans", 3)
    cfg = spec.config or Config()
    mean, std = list(cfg.augment.mean), list(cfg.augment.std)
    if len(mean) != in_chans:  # an official checkpoint without a config: ImageNet statistics
        mean, std = list(Config().augment.mean)[:in_chans], list(Config().augment.std)[:in_chans]
    size = args.size or spec.kwargs.get("img_size", 224)
    patch = backbone.patch_embed.patch_size[0]
    if size % patch:
        raise UserError(f"--size {size} is not a multiple of the patch size {patch}")
    if not 0 < args.keep <= 1:
        raise UserError("--keep must be in (0, 1]")
    image = read_image(args.image, in_chans)
    x = prepare(image, size, mean, std, cfg.eval.crop_ratio)
    attn = cls_attention(backbone, x)
    mask = mass_mask(attn, args.keep)
    shown = x[0] * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)  # the resized input
    out = render((shown.clamp(0, 1) * 255).round(), attn, mask, args.out,
                 title=f"{args.image} - last block, {attn.shape[0]} heads, {size} px, masks keep "
                       f"{args.keep:.0%} of the attention".replace("%", " %"), keep=args.keep)
    print(f"attention maps of {attn.shape[0]} heads ({attn.shape[1]}x{attn.shape[2]} patches) written to {out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("attention", help="last block's CLS attention maps over an image",
                       description="Per-head CLS-to-patch attention of the last block, and the mask keeping "
                                   "a share of the attention mass (--keep, DINO's figures: 0.6), as one PNG.")
    p.add_argument("target", metavar="CHECKPOINT", help="run directory, checkpoint, export directory or .safetensors")
    p.add_argument("image", metavar="IMAGE", help="a PNG or JPEG file (centre-cropped like the evaluation view)")
    p.add_argument("--out", required=True, help="PNG path")
    p.add_argument("--checkpoint-key", default="teacher", choices=["teacher", "student"],
                   help="which network of a training checkpoint (default: teacher)")
    p.add_argument("--size", type=int, default=None, help="input size in pixels (default: the training size)")
    p.add_argument("--keep", type=float, default=0.6,
                   help="fraction of the attention mass the mask keeps (default 0.6, as in the DINO paper)")
    p.set_defaults(func=run)
