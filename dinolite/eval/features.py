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
