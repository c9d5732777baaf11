"""Block-wise iBOT masks: target sizes, rectangles, probabilities, and independence from the world size."""

import random

import numpy as np
import pytest

from dinolite.maths.masking import block_mask, sample_masks


@pytest.mark.parametrize("h,w,n", [(14, 14, 40), (14, 14, 98), (4, 4, 3), (4, 4, 8), (7, 5, 10)])
def test_block_mask_never_overshoots_and_gets_close(h, w, n):
    for seed in range(20):
        m = block_mask(random.Random(seed), h, w, n)
        assert m.shape == (h, w) and m.dtype == bool
        assert m.sum() <= n
    # on a grid that leaves room, the target is reached most of the time
    hits = sum(block_mask(random.Random(s), h, w, n).sum() == n for s in range(50))
    assert hits >= 25


def _with_masked_neighbour(m: np.ndarray) -> float:
    """Fraction of masked patches with a masked 4-neighbour."""
    p = np.pad(m, 1)
    near = p[:-2, 1:-1] | p[2:, 1:-1] | p[1:-1, :-2] | p[1:-1, 2:]
    return float((m & near).sum() / max(m.sum(), 1))


def test_block_masks_come_in_blocks_not_scattered_patches():
    """BEiT's masks are rectangles of >= 4 patches: almost every masked patch touches another one, unlike
    the same number of patches scattered at random."""
    rng = np.random.default_rng(0)
    blocky, scattered = [], []
    for seed in range(40):
        m = block_mask(random.Random(seed), 14, 14, 50)
        blocky.append(_with_masked_neighbour(m))
        flat = np.zeros(196, dtype=bool)
        flat[rng.choice(196, int(m.sum()), replace=False)] = True
        scattered.append(_with_masked_neighbour(flat.reshape(14, 14)))
    assert np.mean(blocky) > 0.95 and np.mean(scattered) < 0.8


def test_probability_and_ratio_of_sample_masks():
    none = sample_masks(7, 2, 0, 64, 8, 8, (0.1, 0.5), probability=0.0)
    assert none.shape == (128, 8, 8) and not none.any()
    every = sample_masks(7, 2, 0, 64, 8, 8, (0.2, 0.4), probability=1.0)
    counts = every.flatten(1).sum(1).float()
    assert (counts > 0).all() and (counts <= round(0.4 * 64)).all()
    half = sample_masks(7, 2, 0, 500, 8, 8, (0.1, 0.5), probability=0.5)
    masked = (half.flatten(1).sum(1) > 0).float().mean().item()
    assert 0.42 < masked < 0.58


def test_masks_are_drawn_per_global_sample():
    """A rank drawing samples 4..7 gets exactly the rows one process draws for them: no dependence on the world size."""
    whole = sample_masks(123, 2, 0, 8, 6, 6, probability=0.7).view(2, 8, 6, 6)
    first = sample_masks(123, 2, 0, 4, 6, 6, probability=0.7).view(2, 4, 6, 6)
    second = sample_masks(123, 2, 4, 4, 6, 6, probability=0.7).view(2, 4, 6, 6)
    assert (whole[:, :4] == first).all() and (whole[:, 4:] == second).all()
    assert not (sample_masks(124, 2, 0, 8, 6, 6, probability=0.7) == whole.view(16, 6, 6)).all()  # new step, new masks
