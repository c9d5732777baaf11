"""Batches of uint8 images in a seeded order that can start mid-epoch (for exact resume)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import cast

import torch
from torch.utils.data import DataLoader

from .base import Batch, EvalBatch, ImageSource, Source, whole_batch


def _loader(source: ImageSource, batches: list[list[int]], num_workers: int, pin_memory: bool) -> DataLoader:
    # The DataLoader draws its workers' base seed from the generator it is given, or else from the
    # global RNG; a private generator keeps the global stream (drop path) identical across resumes.
    return DataLoader(source, batch_sampler=batches, collate_fn=whole_batch, num_workers=num_workers,
                      pin_memory=pin_memory, prefetch_factor=4 if num_workers else None,
                      generator=torch.Generator().manual_seed(0))


class BatchLoader:
    """Per-epoch seeded permutation, split by rank, last incomplete batch dropped.

    The order of epoch ``e`` depends only on ``(seed, e)``, so a run resumed at step ``s`` of an
    epoch reads exactly the batches it would have read without the interruption. Rank ``r`` of
    ``world`` takes every ``world``-th batch-sized slice of the permutation; the remainder of
    ``len(source) % (batch_size * world)`` images is left out of that epoch (a different one each
    epoch, since the permutation changes).
    """

    def __init__(self, source: ImageSource, batch_size: int, seed: int, num_workers: int = 0,
                 rank: int = 0, world: int = 1, pin_memory: bool = False):
        self.source, self.batch_size, self.seed = source, batch_size, seed
        self.num_workers, self.rank, self.world, self.pin_memory = num_workers, rank, world, pin_memory
        self.steps_per_epoch = len(source) // (batch_size * world)
        if self.steps_per_epoch == 0:
            raise ValueError("fewer images than one global batch")

    def batch_indices(self, epoch: int) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        perm = torch.randperm(len(self.source), generator=g).tolist()
        b, w = self.batch_size, self.world
        return [perm[(s * w + self.rank) * b:(s * w + self.rank + 1) * b] for s in range(self.steps_per_epoch)]

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        """Yield ``(images uint8 [B,C,S,S], hw [B,2], labels [B])`` from step ``start_step`` of ``epoch``."""
        batches = self.batch_indices(epoch)[start_step:]
        yield from _loader(self.source, batches, self.num_workers, self.pin_memory)

    def skipped_samples(self) -> int:
        """Bad images met so far: those listed in the source's ``bad_log`` (shared by workers and ranks)."""
        from .folder import read_bad_log

        return len(read_bad_log(getattr(self.source, "bad_log", None)))


class _Readable(torch.utils.data.Dataset):
    """``source`` read for evaluation: a batch of indices gives its readable rows only (``ImageSource.eval_items``)."""

    def __init__(self, source: ImageSource):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitems__(self, indices: list[int]):
        return self.source.eval_items(indices)


def eval_rows(source: Source, batch_size: int, num_workers: int = 0, pin_memory: bool = False,
              indices: range | list[int] | None = None) -> Iterator[EvalBatch]:
    """All images (or those of ``indices``) in order, as ``EvalBatch``es: an unreadable image is left out of its
    batch and named in ``bad``, never replaced by another, so every row stands for its own sample (a batch may
    be short, even empty).

    Accepts an indexable ``ImageSource`` or a streamed ``ShardSet`` (shard order; ``indices`` must then be None).
    """
    from .shards import ShardSet

    if isinstance(source, ShardSet):
        if indices is not None:
            raise ValueError("a streamed ShardSet is read whole")
        yield from source.eval_rows(batch_size, num_workers, pin_memory)
        return
    idx = list(range(len(source)) if indices is None else indices)
    batches = [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]
    loader = DataLoader(_Readable(cast(ImageSource, source)), batch_sampler=batches, collate_fn=whole_batch,
                        num_workers=num_workers, pin_memory=pin_memory, prefetch_factor=4 if num_workers else None,
                        generator=torch.Generator().manual_seed(0))
    for images, hw, labels, rows, bad in loader:
        yield EvalBatch(images, hw, labels, list(rows), list(bad))


def eval_batches(source: Source, batch_size: int, num_workers: int = 0, pin_memory: bool = False,
                 indices: range | list[int] | None = None) -> Iterable[Batch]:
    """The readable images of :func:`eval_rows` as ``(images, hw, labels)`` batches (the last may be short)."""
    from .shards import ShardSet

    if isinstance(source, ShardSet):
        if indices is not None:
            raise ValueError("a streamed ShardSet is read whole")
        return source.eval_batches(batch_size, num_workers, pin_memory)
    return ((b.images, b.hw, b.labels) for b in eval_rows(source, batch_size, num_workers, pin_memory, indices)
            if len(b.labels))
