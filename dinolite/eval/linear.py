"""Linear probes on a frozen backbone: DINO's protocol, and a fast sweep on cached features.

Protocol (facebookresearch/dino, eval_linear.py): the input is the CLS token of the last n blocks
(+ optionally the average patch token, see ``ProbeFeatures``); one ``nn.Linear`` (weights
N(0, 0.01), bias 0) is trained with SGD (momentum 0.9, no weight decay), lr = base_lr x batch / 256
on a cosine schedule to 0, on RandomResizedCrop + horizontal flip views of the training images,
and tested on the evaluation view (centre crop, resized).

Fast mode: the features of the evaluation view are computed once (and cached); many classifiers,
one per learning rate, are trained together as one batched matrix product; the learning rate is
picked on a held-out part of the training set and the picked classifier is scored on the test set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm import tqdm

from ..data import Source, build_loader
from ..data.base import check_class_labels
from ..errors import UserError
from ..maths.augment import crop_resize, sample_crop_boxes
from .knn import topk_accuracy

FAST_LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)


def linear_layer(dim: int, num_classes: int) -> nn.Linear:
    layer = nn.Linear(dim, num_classes)
    nn.init.normal_(layer.weight, std=0.01)
    nn.init.zeros_(layer.bias)
    return layer


def cosine_factor(step: int, total: int) -> float:
    return 0.5 * (1 + math.cos(math.pi * step / max(total, 1)))


class ProbeTrainTransform(nn.Module):
    """DINO's linear-probe training view on the device: RandomResizedCrop + flip, normalised."""

    mean: Tensor  # buffers
    std: Tensor

    def __init__(self, size: int, mean, std, scale=(0.08, 1.0)):
        super().__init__()
        self.size, self.scale = size, tuple(scale)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    @torch.no_grad()
    def forward(self, images: Tensor, hw: Tensor, g: torch.Generator) -> Tensor:
        x = images.to(torch.float32).div_(255)
        boxes = sample_crop_boxes(hw.to(x.device), self.scale, g)
        v = crop_resize(x, boxes, self.size)
        flip = (torch.rand(v.shape[0], generator=g, device=g.device) < 0.5).view(-1, 1, 1, 1)
        v = torch.where(flip, v.flip(-1), v)
        return (v - self.mean) / self.std


@dataclass
class ProtocolResult:
    classifier: nn.Linear
    test: dict


def train_protocol(features: nn.Module, dim: int, train: Source, train_view: ProbeTrainTransform,
                   test_feats: Tensor, test_labels: Tensor, num_classes: int, device: torch.device,
                   epochs: int = 100, batch_size: int = 1024, base_lr: float = 0.001, seed: int = 0,
                   num_workers: int = 0, progress: bool = True) -> ProtocolResult:
    """Train the linear layer on augmented views passed through the frozen ``features`` each step.

    The batches come from pretraining's loader (``build_loader``: seeded order, full batches; an image
    folder, Fashion-MNIST or streamed shards alike).
    """
    if len(train) < batch_size:
        raise UserError(f"--batch-size {batch_size} is more than the {len(train)} training images: lower --batch-size")
    torch.manual_seed(seed)
    clf = linear_layer(dim, num_classes).to(device)
    lr = base_lr * batch_size / 256
    opt = torch.optim.SGD(clf.parameters(), lr=lr, momentum=0.9, weight_decay=0.0)
    g = torch.Generator(device).manual_seed(seed)
    loader = build_loader(train, batch_size, seed, num_workers, pin_memory=device.type == "cuda")
    total, step = epochs * loader.steps_per_epoch, 0
    features.eval()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    bar = tqdm(total=total, desc="linear probe", disable=not progress, leave=False)
    for epoch in range(epochs):
        for images, hw, y in loader.epoch(epoch):
            check_class_labels(y, num_classes, "the training data", "the linear probe")
            for group in opt.param_groups:
                group["lr"] = lr * cosine_factor(step, total)
            with torch.no_grad(), autocast:
                x = features(train_view(images.to(device), hw, g)).float()
            loss = nn.functional.cross_entropy(clf(x), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            bar.update(1)
    bar.close()
    with torch.no_grad():
        scores = clf(test_feats.to(device).float())
    return ProtocolResult(clf.cpu(), topk_accuracy(scores, test_labels))


@dataclass
class SweepResult:
    lrs: list[float]
    holdout_top1: list[float]
    best: int
    classifier: nn.Linear
    test: dict


def split_holdout(n: int, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Indices ``(train part, held-out part)``: a seeded random ``fraction`` of ``n`` held out."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_hold = max(1, int(round(n * fraction)))
    return perm[n_hold:], perm[:n_hold]


def train_sweep(train_feats: Tensor, train_labels: Tensor, test_feats: Tensor, test_labels: Tensor,
                num_classes: int, lrs=FAST_LRS, epochs: int = 50, batch_size: int = 1024,
                holdout: float = 0.1, seed: int = 0, progress: bool = True) -> SweepResult:
    """One linear classifier per learning rate, trained together on cached features.

    The L classifiers are one ``[L, D, C]`` weight tensor; each step is one batched matmul, and
    since the summed loss separates over L, each classifier gets exactly its own gradient.
    """
    device = train_feats.device
    fit, held = split_holdout(len(train_labels), holdout, seed)
    fit, held = fit.to(device), held.to(device)
    x_fit, y_fit = train_feats[fit].float(), train_labels[fit]
    n_lr, dim = len(lrs), train_feats.shape[1]
    g = torch.Generator().manual_seed(seed)
    init = torch.randn(dim, num_classes, generator=g) * 0.01  # every classifier starts from the same weights
    w = init.expand(n_lr, -1, -1).contiguous().to(device).requires_grad_(True)
    b = torch.zeros(n_lr, 1, num_classes, device=device, requires_grad=True)
    lr = torch.tensor(lrs, device=device, dtype=torch.float32)
    buf_w, buf_b = torch.zeros_like(w), torch.zeros_like(b)
    steps_per_epoch = math.ceil(len(y_fit) / batch_size)
    total, step = epochs * steps_per_epoch, 0
    for _ in tqdm(range(epochs), desc="linear sweep", disable=not progress, leave=False):
        perm = torch.randperm(len(y_fit), generator=g).to(device)
        for i in range(0, len(perm), batch_size):
            idx = perm[i:i + batch_size]
            logits = torch.baddbmm(b, x_fit[idx].expand(n_lr, -1, -1), w)  # [L, B, C]
            loss = nn.functional.cross_entropy(logits.flatten(0, 1), y_fit[idx].repeat(n_lr), reduction="sum")
            w.grad = b.grad = None
            (loss / len(idx)).backward()
            with torch.no_grad():
                assert w.grad is not None and b.grad is not None
                step_lr = (lr * cosine_factor(step, total)).view(-1, 1, 1)
                buf_w.mul_(0.9).add_(w.grad)
                buf_b.mul_(0.9).add_(b.grad)
                w.sub_(step_lr * buf_w)
                b.sub_(step_lr * buf_b)
            step += 1
    with torch.no_grad():
        def scores(x: Tensor) -> Tensor:
            return torch.baddbmm(b, x.float().expand(n_lr, -1, -1), w)

        held_scores = scores(train_feats[held])
        held_top1 = [topk_accuracy(held_scores[i], train_labels[held])["top1"] for i in range(n_lr)]
        best = max(range(n_lr), key=lambda i: (held_top1[i], -i))
        clf = linear_layer(dim, num_classes)
        clf.weight.copy_(w[best].T.cpu())
        clf.bias.copy_(b[best, 0].cpu())
        test = topk_accuracy(scores(test_feats)[best], test_labels)
    return SweepResult(list(lrs), held_top1, best, clf, test)
