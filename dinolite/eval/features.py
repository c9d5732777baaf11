"""CLS features of a frozen backbone over a whole image source."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm import tqdm

from ..augment import EvalTransform
from ..data import Source, eval_batches


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _gather_in_order(part: Tensor, total: int, chunk: int) -> Tensor:
    """Every rank's ``part`` (rank r holds rows ``r*chunk ..``), concatenated on every rank.

    ``all_gather`` wants equal shapes, so parts are padded to ``chunk`` rows and trimmed after.
    """
    padded = part.new_zeros((chunk, *part.shape[1:]))
    padded[:len(part)] = part
    out = [torch.empty_like(padded) for _ in range(dist.get_world_size())]
    dist.all_gather(out, padded)
    return torch.cat(out)[:total]


@torch.no_grad()
def extract_features(backbone: nn.Module, source: Source, transform: EvalTransform, device: torch.device,
                     batch_size: int = 256, num_workers: int = 0, desc: str = "features",
                     progress: bool = True, indices: range | list[int] | None = None) -> tuple[Tensor, Tensor]:
    """``(features [N, D] float32, labels [N])`` on ``device``, in the source's order.

    Under torch.distributed every rank extracts a contiguous share of an indexable source and
    gets the whole result back (every rank must call this). A streamed shard set is read whole
    by every rank. Given ``indices`` (a fixed subset, e.g. the online k-NN's), every rank reads
    just those, on its own, with no collective.
    """
    rank, world = _world()
    split = indices is None and world > 1 and hasattr(source, "__getitem__") and hasattr(source, "__len__")
    if split:
        chunk = -(-len(source) // world)
        indices = range(min(rank * chunk, len(source)), min((rank + 1) * chunk, len(source)))
    was_training = backbone.training
    backbone.eval()
    feats, labels = [], []
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    loader = eval_batches(source, batch_size, num_workers, pin_memory=device.type == "cuda", indices=indices)
    count = len(indices) if indices is not None else len(source)  # shard sets know their size from the manifest
    total = -(-count // batch_size)
    for images, hw, y in tqdm(loader, desc=desc, total=total, disable=not progress or rank > 0, leave=False):
        x = transform(images.to(device, non_blocking=True), hw)
        with autocast:
            feats.append(backbone(x).float())
        labels.append(y.to(device))
    backbone.train(was_training)
    if not split:
        return torch.cat(feats), torch.cat(labels)
    dim = feats[0].shape[1] if feats else getattr(backbone, "dim", getattr(backbone, "num_features", 0))
    mine_f = torch.cat(feats) if feats else torch.zeros(0, dim, device=device)
    mine_y = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long, device=device)
    return _gather_in_order(mine_f, len(source), chunk), _gather_in_order(mine_y, len(source), chunk)


class ProbeFeatures(nn.Module):
    """The linear-probe input of DINO's protocol: for a ViT, the (normalised) CLS token of each of the
    last ``n_blocks`` blocks, concatenated, optionally followed by the average of the last block's patch
    tokens (DINO: n = 4 without pooling for ViT-S, n = 1 with pooling for ViT-B); for a CNN, its globally
    pooled features (DINO's ResNet-50 protocol), ``n_blocks`` and ``avgpool`` not applying."""

    backbone: Any  # a timm model (blocks, num_features, forward_intermediates are timm's attributes)

    def __init__(self, backbone: nn.Module, n_blocks: int | None = None, avgpool: bool = False):
        super().__init__()
        from ..models import is_vit_backbone

        self.backbone = backbone
        self.vit = is_vit_backbone(backbone)
        depth = len(self.backbone.blocks) if self.vit else 0
        n_blocks = min(4, depth) if n_blocks is None else n_blocks  # DINO's ViT-S choice, capped by the depth
        if self.vit and not 1 <= n_blocks <= depth:
            from ..errors import UserError

            raise UserError(f"--n-blocks must be between 1 and the backbone's depth ({depth}), not {n_blocks}")
        self.n_blocks, self.avgpool = n_blocks, avgpool

    @property
    def dim(self) -> int:
        if not self.vit:
            return self.backbone.num_features
        return self.backbone.num_features * (self.n_blocks + int(self.avgpool))

    @property
    def description(self) -> str:
        if not self.vit:
            return "pooled features"
        return f"CLS of last {self.n_blocks} block(s){' + avg patch' if self.avgpool else ''}"

    def forward(self, x: Tensor) -> Tensor:
        if not self.vit:
            return self.backbone(x)
        outs = self.backbone.forward_intermediates(x, indices=self.n_blocks, norm=True, output_fmt="NLC",
                                                   intermediates_only=True, return_prefix_tokens=True)
        feats = [prefix[:, 0] for _, prefix in outs]
        if self.avgpool:
            feats.append(outs[-1][0].mean(dim=1))
        return torch.cat(feats, dim=1)


class RawPixels(nn.Module):
    """The "no learning at all" baseline: the evaluation view's normalised pixels, flattened, as features."""

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1)
