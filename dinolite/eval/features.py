"""CLS features of a frozen backbone over a whole image source."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from tqdm import tqdm

from ..augment import EvalTransform
from ..data import ImageSource, eval_batches


@torch.no_grad()
def extract_features(backbone: nn.Module, source: ImageSource, transform: EvalTransform, device: torch.device,
                     batch_size: int = 256, num_workers: int = 0, desc: str = "features",
                     progress: bool = True) -> tuple[Tensor, Tensor]:
    """``(features [N, D] float32, labels [N])`` on ``device``, in the source's order."""
    was_training = backbone.training
    backbone.eval()
    feats, labels = [], []
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    loader = eval_batches(source, batch_size, num_workers, pin_memory=device.type == "cuda")
    for images, hw, y in tqdm(loader, desc=desc, disable=not progress, leave=False):
        x = transform(images.to(device, non_blocking=True), hw)
        with autocast:
            feats.append(backbone(x).float())
        labels.append(y.to(device))
    backbone.train(was_training)
    return torch.cat(feats), torch.cat(labels)


class ProbeFeatures(nn.Module):
    """The linear-probe input of DINO's protocol: the (normalised) CLS token of each of the last
    ``n_blocks`` blocks, concatenated, optionally followed by the average of the last block's patch
    tokens (DINO: n = 4 without pooling for ViT-S, n = 1 with pooling for ViT-B)."""

    def __init__(self, backbone: nn.Module, n_blocks: int = 4, avgpool: bool = False):
        super().__init__()
        depth = len(backbone.blocks)
        if not 1 <= n_blocks <= depth:
            from ..errors import UserError

            raise UserError(f"--n-blocks must be between 1 and the backbone's depth ({depth}), not {n_blocks}")
        self.backbone, self.n_blocks, self.avgpool = backbone, n_blocks, avgpool

    @property
    def dim(self) -> int:
        return self.backbone.num_features * (self.n_blocks + int(self.avgpool))

    def forward(self, x: Tensor) -> Tensor:
        outs = self.backbone.forward_intermediates(x, indices=self.n_blocks, norm=True, output_fmt="NLC",
                                                   intermediates_only=True, return_prefix_tokens=True)
        feats = [prefix[:, 0] for _, prefix in outs]
        if self.avgpool:
            feats.append(outs[-1][0].mean(dim=1))
        return torch.cat(feats, dim=1)
