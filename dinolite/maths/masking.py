"""Block-wise patch masks for iBOT's masked-patch loss.

The masks follow BEiT's block-wise scheme (Bao et al. 2022), as iBOT and dinov2 use it: rectangles of
at least ``min_patches`` patches, with an aspect ratio drawn log-uniformly in [0.3, 1 / 0.3], are added
at random places until the target number of patches is masked. A crop is masked with probability
``probability``, its ratio drawn uniformly in ``ratio`` (dinov2: 0.5 and [0.1, 0.5]).

Each crop's mask comes from its own seed (the step's seed, the view and the sample's index in the
global batch), so a rank draws only its own samples' masks and the masks do not depend on the number
of processes.
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch
from torch import Tensor


def block_mask(rng: random.Random, h: int, w: int, n_masked: int, min_patches: int = 4,
               max_aspect: float = 1 / 0.3, attempts: int = 10) -> np.ndarray:
    """A ``[h, w]`` bool mask with (up to) ``n_masked`` patches covered by random rectangles.

    Each new rectangle must add at least one patch and not overshoot the target; after ``attempts``
    failed draws in a row the mask is returned as it is (small grids cannot always reach the target).
    """
    mask = np.zeros((h, w), dtype=bool)
    count, log_aspect = 0, (math.log(1 / max_aspect), math.log(max_aspect))
    while count < n_masked:
        room, added = n_masked - count, 0
        for _ in range(attempts):
            area = rng.uniform(min_patches, room)  # when room < min_patches this draws in [room, min_patches]
            aspect = math.exp(rng.uniform(*log_aspect))
            bh, bw = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
            if not (0 < bh < h and 0 < bw < w):
                continue
            top, left = rng.randint(0, h - bh), rng.randint(0, w - bw)
            block = mask[top:top + bh, left:left + bw]
            new = bh * bw - int(block.sum())
            if 0 < new <= room:
                block[...] = True
                added = new
                break
        if not added:
            break
        count += added
    return mask


def crop_seed(step_seed: int, view: int, sample: int) -> int:
    """The seed of one global crop's mask: the step's seed, the view (0 or 1) and the global sample index."""
    return (step_seed * 4 + view) * 1_000_000_007 + sample


def sample_masks(step_seed: int, views: int, first: int, count: int, h: int, w: int,
                 ratio: tuple[float, float] = (0.1, 0.5), probability: float = 0.5, min_patches: int = 4) -> Tensor:
    """Masks ``[views * count, h, w]`` (view-major, as the global crops) of global samples
    ``first .. first + count - 1``; each crop is masked with ``probability``, at a ratio drawn in ``ratio``."""
    out = np.zeros((views, count, h, w), dtype=bool)
    for v in range(views):
        for i in range(count):
            rng = random.Random(crop_seed(step_seed, v, first + i))
            if rng.random() < probability:
                n_masked = int(round(rng.uniform(*ratio) * h * w))
                out[v, i] = block_mask(rng, h, w, n_masked, min_patches)
    return torch.from_numpy(out.reshape(views * count, h, w))
