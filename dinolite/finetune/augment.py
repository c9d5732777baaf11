"""On-device augmentation for labelled training: random resized crop, flip, optional colour jitter,
and the stronger second view of the consistency method. Batched like pretraining's multi-crop
(the crop and colour ops are ``dinolite.maths.augment``'s), every random draw from one generator, or from a
``GlobalBatchRNG`` so that each sample's view does not depend on the number of processes."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..maths.augment import RNG, color_jitter, crop_resize, draw, sample_crop_boxes


def _uniform(n: int, low: float, high: float, g: RNG) -> Tensor:
    return draw(g, n) * (high - low) + low


def random_jitter(x: Tensor, p: float, brightness: float, contrast: float, saturation: float,
                  g: RNG) -> Tensor:
    """ColorJitter (no hue) with probability ``p`` per sample, factors uniform in ``[1 - s, 1 + s]``."""
    n = x.shape[0]
    apply = draw(g, n) < p
    one = torch.ones(n, device=x.device)
    factor = lambda s: torch.where(apply, _uniform(n, max(0.0, 1 - s), 1 + s, g), one)  # noqa: E731
    order = draw(g, n, 4).argsort(dim=1)
    return color_jitter(x, factor(brightness), factor(contrast), factor(saturation), None, order)


class LabeledAugment(nn.Module):
    """uint8 batch -> one training view per image in [0, 1] (``normalise`` it before the model)."""

    mean: Tensor  # buffers
    std: Tensor

    def __init__(self, size: int, scale, flip_p: float, jitter_p: float, brightness: float, contrast: float,
                 saturation: float, mean, std):
        super().__init__()
        self.size, self.scale, self.flip_p = size, tuple(scale), flip_p
        self.jitter = (jitter_p, brightness, contrast, saturation)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def normalise(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    @torch.no_grad()
    def forward(self, images: Tensor, hw: Tensor, g: RNG) -> Tensor:
        x = images.to(torch.float32).div_(255)
        boxes = sample_crop_boxes(hw.to(x.device), self.scale, g)
        v = crop_resize(x, boxes, self.size)
        flip = (draw(g, v.shape[0]) < self.flip_p).view(-1, 1, 1, 1)
        v = torch.where(flip, v.flip(-1), v)
        if self.jitter[0] > 0:
            v = random_jitter(v, *self.jitter, g)
        return v


class ConsistencyView(nn.Module):
    """``aug(x)`` of the consistency method: a random resized crop of the training view ``x`` itself
    plus colour jitter, both scaled by ``strength`` (0 gives ``x`` back unchanged).

    strength s: crop area in ``[max(0.08, 1 - 0.6 s), 1]``, aspect ratio in ``[3/4, 4/3]``; brightness,
    contrast and saturation factors in ``[1 - 0.5 s, 1 + 0.5 s]`` (capped at 0.9 below 1).
    """

    mean: Tensor  # buffers
    std: Tensor

    def __init__(self, strength: float, mean, std):
        super().__init__()
        self.strength = strength
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    @torch.no_grad()
    def forward(self, views: Tensor, g: RNG) -> Tensor:
        """``views``: the training views in [0, 1], ``[B, C, S, S]``; returns aug(views), normalised."""
        s = self.strength
        v = views
        if s > 0:
            b, size = views.shape[0], views.shape[-1]
            hw = torch.full((b, 2), size, device=views.device)
            boxes = sample_crop_boxes(hw, (max(0.08, 1 - 0.6 * s), 1.0), g)
            j = min(0.9, 0.5 * s)
            v = random_jitter(crop_resize(views, boxes, size), 1.0, j, j, j, g)
        return (v - self.mean) / self.std
