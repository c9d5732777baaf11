"""The data protocol every source and loader follows: padded uint8 images, their valid sizes, and labels.

A batch is always ``(images uint8 [B, C, S, S], hw int64 [B, 2], labels int64 [B])``; a sample without
a label (a shard written without ``.cls``) carries -1. Pretraining ignores the labels; fine-tuning and
the linear probe train on them, so all three read the same loaders.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple, Protocol

import torch

from ..errors import UserError

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (images, hw, labels)
# An evaluation batch: (images, hw, labels) of the readable samples only, what each row is (a source index, or a
# shard sample's key), and (name, reason) of each sample left out because it cannot be read.
EvalItems = tuple[torch.Tensor, torch.Tensor, torch.Tensor, list, list[tuple[str, str]]]


class EvalBatch(NamedTuple):
    """What evaluation reads: the readable samples of a batch, each row its own sample (never a stand-in)."""

    images: torch.Tensor  # uint8 [B, C, S, S]
    hw: torch.Tensor  # int64 [B, 2]
    labels: torch.Tensor  # int64 [B]
    rows: list  # what each row is: its index in the source, or a shard sample's key
    bad: list[tuple[str, str]]  # (file or key, reason) of each sample left out as unreadable
    missing: int = 0  # samples a damaged shard no longer holds (left out, counted; they have no name)


def whole_batch(batch: Any) -> Any:
    """The DataLoader's collate function: sources return whole batches (a ``Batch``) from ``__getitems__``."""
    return batch


def check_class_labels(labels: torch.Tensor, num_classes: int, where: str, task: str) -> None:
    """A one-line UserError unless every label indexes one of ``num_classes`` classes (-1: no label)."""
    if bool((labels < 0).any()):
        raise UserError(f"{int((labels < 0).sum())} image(s) in {where} carry no label: {task} needs "
                        f"labelled data (shards written by 'dinolite shards' from an image folder or Fashion-MNIST)")
    if bool((labels >= num_classes).any()):
        raise UserError(f"{where} has label {int(labels.max())} but the training split has only {num_classes} "
                        f"classes: every label must be one of the training split's classes")


class Source(Protocol):
    """What every source says about its images: an indexable ``ImageSource`` or a streamed ``ShardSet``."""

    channels: int
    size: int  # side of the padded canvas
    classes: list[str]

    def __len__(self) -> int: ...

    @property
    def num_classes(self) -> int: ...


class TrainLoader(Protocol):
    """A training split's batches for one rank, in a seeded order that can start mid-epoch (exact resume)."""

    steps_per_epoch: int

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        """``(images, hw, labels)`` from step ``start_step`` of ``epoch``."""
        ...

    def skipped_samples(self) -> int:
        """Bad samples met so far (undecodable, or missing from a damaged shard)."""
        ...


class ImageSource(torch.utils.data.Dataset):
    """An indexable labelled image set decoded to uint8 tensors of one padded shape.

    Each image is bounded to ``size`` pixels on its longer side and written into the top-left
    corner of a ``channels x size x size`` canvas; ``(h, w)`` says which part is the image, so
    the on-device crops sample their boxes inside it and see the whole picture, whatever its
    aspect ratio. ``__getitems__`` returns a whole batch: ``(images, hw, labels)``.
    """

    channels: int
    size: int
    labels: torch.Tensor  # int64 [N]
    classes: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __getitems__(self, indices: list[int]) -> Batch:
        raise NotImplementedError

    def eval_items(self, indices: list[int]) -> EvalItems:
        """``indices`` for evaluation: the readable ones only, each row its own sample (an image folder
        leaves its unreadable files out; in-memory sources have none)."""
        images, hw, labels = self.__getitems__(indices)
        return images, hw, labels, list(indices), []

    def __getitem__(self, index: int):
        images, hw, labels = self.__getitems__([index])
        return images[0], hw[0], labels[0]
