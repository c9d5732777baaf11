"""Online k-NN: the weighted k-NN of ``dinolite knn`` on a fixed labelled subset, cheap enough to run
every few hundred steps of training (5,000 bank images and 1,000 queries take about a second for
the quickstart's ViT on 2 CPU cores)."""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import nn

from ..maths.augment import EvalTransform
from .features import extract_rows, rank_and_world
from .knn import knn_accuracy


def spread_indices(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (all of them when ``k`` is 0 or >= n).

    Evenly spaced rather than the first ``k``: an image folder is sorted by class, and its first
    5,000 images may hold a single class.
    """
    if k <= 0 or k >= n:
        return list(range(n))
    return [i * n // k for i in range(k)]


class OnlineKNN:
    """Scores a backbone by weighted k-NN: ``n_bank`` training images as the bank, ``n_queries`` test images."""

    def __init__(self, train_source, test_source, transform: EvalTransform, device: torch.device,
                 n_bank: int, n_queries: int, k: int = 20, temperature: float = 0.07,
                 batch_size: int = 256, num_workers: int = 0):
        self.train, self.test, self.transform, self.device = train_source, test_source, transform, device
        self.bank_idx = spread_indices(len(train_source), n_bank)
        self.query_idx = spread_indices(len(test_source), n_queries)
        self.k, self.temperature, self.batch_size, self.num_workers = k, temperature, batch_size, num_workers
        self.num_classes = max(train_source.num_classes, test_source.num_classes)
        self.scored_queries: int | None = None  # the queries the last evaluation scored
        self.left_out: dict[str, str] = {}  # file -> reason of every unreadable image left out so far

    @property
    def queries(self) -> int:
        """The test images each evaluation scores (fewer than ``n_queries`` on a smaller test split, or once an
        unreadable image was left out): what the figure's noise depends on (the collapse monitor's margin)."""
        return self.scored_queries if self.scored_queries is not None else len(self.query_idx)

    @torch.no_grad()
    def __call__(self, backbone: nn.Module) -> float:
        """Top-1 (in %); every rank computes the same figure on its own (no collective). An unreadable image is
        left out of the bank or the queries (counted, listed in a warning once), never replaced by another."""
        kw: dict[str, Any] = dict(batch_size=self.batch_size, num_workers=self.num_workers, progress=False)
        bank = extract_rows(backbone, self.train, self.transform, self.device, indices=self.bank_idx, **kw)
        queries = extract_rows(backbone, self.test, self.transform, self.device, indices=self.query_idx, **kw)
        self.scored_queries = len(queries.labels)
        new = [(n, r) for n, r in bank.unreadable + queries.unreadable if n not in self.left_out]
        if new:
            self.left_out.update(new)
            if rank_and_world()[0] == 0:
                shown = ", ".join(n for n, _ in new[:3]) + (", ..." if len(new) > 3 else "")
                print(f"warning: online k-NN: left out {len(new)} unreadable image(s) ({shown}); it scores "
                      f"{len(bank.labels)} bank and {len(queries.labels)} query images", file=sys.stderr, flush=True)
        return knn_accuracy(queries.features, queries.labels, bank.features, bank.labels, self.num_classes, self.k,
                            self.temperature)["top1"]
