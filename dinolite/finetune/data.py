"""Labelled training batches and the checks that the data really is labelled.

The sources and the rank-split, seeded, resumable batch order are pretraining's (``build_source``,
``BatchLoader`` / ``ShardLoader``); fine-tuning only needs the labels that pretraining drops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from torch.utils.data import DataLoader

from ..data import build_loader, build_source, eval_batches
from ..train import per_rank_batch
from ..data.shards import ShardLoader
from ..errors import UserError
from .config import FinetuneConfig


def _whole_batch(batch):
    return batch  # sources return whole batches from __getitems__


def _where(cfg: FinetuneConfig, split: str) -> str:
    d = cfg.data
    if d.source == "shards":
        return d.root if split == "train" else d.eval_shards
    if d.source == "folder":
        return f"{d.root}/{d.train_dir if split == 'train' else d.val_dir}"
    return f"{d.root} ({split})"


def check_labels(train, test, cfg: FinetuneConfig) -> list[str]:
    """The class names; a UserError when the data has fewer than 2 classes, unlabelled images,
    labels the training split does not know, or classes without a single training image."""
    classes = list(train.classes)
    if len(classes) < 2:
        raise UserError(f"{_where(cfg, 'train')} has {len(classes)} class(es): fine-tuning needs labelled data "
                        f"with at least 2 classes (image folders: one sub-folder per class; shards: written "
                        f"with their .cls labels by 'dinolite shards')")
    test_classes = list(getattr(test, "classes", []) or [])
    if test_classes and test_classes != classes:
        extra = sorted(set(test_classes) - set(classes)) or sorted(set(classes) - set(test_classes)) or test_classes[:2]
        raise UserError(f"the test split's classes differ from the training split's (e.g. {extra[:3]}): "
                        f"{_where(cfg, 'test')} must hold the classes of {_where(cfg, 'train')}")
    for split, source in (("train", train), ("test", test)):
        labels = getattr(source, "labels", None)  # streamed shards are checked batch by batch
        if labels is None or not len(labels):
            continue
        check_batch_labels(labels, len(classes), _where(cfg, split))
    labels = getattr(train, "labels", None)
    if labels is not None and len(labels):
        counts = torch.bincount(labels, minlength=len(classes))
        empty = [classes[i] for i in range(len(classes)) if counts[i] == 0]
        if empty:
            raise UserError(f"labels missing from the training data: class(es) {empty[:3]} have no training image "
                            f"in {_where(cfg, 'train')}; add images for them or raise data.subset")
    return classes


def check_batch_labels(labels: torch.Tensor, num_classes: int, where: str) -> None:
    """Labels must be class indices; -1 is what a shard sample without a .cls file carries."""
    if bool((labels < 0).any()):
        raise UserError(f"{int((labels < 0).sum())} image(s) in {where} carry no label: fine-tuning needs "
                        f"labelled data (shards written by 'dinolite shards' from an image folder or Fashion-MNIST)")
    if bool((labels >= num_classes).any()):
        raise UserError(f"{where} has label {int(labels.max())} but the training split has only {num_classes} "
                        f"classes: use a test split with the training split's classes")


class TrainLoader:
    """One seed's labelled training batches of this rank (pretraining's loader plus the labels)."""

    def __init__(self, source, batch_size: int, seed: int, num_workers: int, rank: int, world: int, pin_memory: bool):
        self.source, self.num_workers, self.pin_memory = source, num_workers, pin_memory
        self.loader = build_loader(source, batch_size, seed, num_workers, rank, world, pin_memory)
        self.steps_per_epoch = self.loader.steps_per_epoch

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """``(images uint8, hw, labels)`` from step ``start_step`` of ``epoch``."""
        if isinstance(self.loader, ShardLoader):
            for images, hw, labels, *_ in self.loader.batches(epoch, start_step):
                yield images, hw, labels
            return
        batches = self.loader.batch_indices(epoch)[start_step:]
        # a private generator: the global RNG stream (drop path) stays identical across resumes
        yield from DataLoader(self.source, batch_sampler=batches, collate_fn=_whole_batch, num_workers=self.num_workers,
                              pin_memory=self.pin_memory, prefetch_factor=4 if self.num_workers else None,
                              generator=torch.Generator().manual_seed(0))


@dataclass
class LabeledData:
    """The two splits, their classes, and how to batch them on this rank."""

    train: object
    test: object
    classes: list[str]
    batch_size: int
    num_workers: int
    rank: int
    world: int
    pin_memory: bool

    @property
    def channels(self) -> int:
        return self.train.channels

    def train_loader(self, seed: int) -> TrainLoader:
        return TrainLoader(self.train, self.batch_size, seed, self.num_workers, self.rank, self.world, self.pin_memory)

    def test_batches(self, batch_size: int):
        """``(images, hw, labels)`` of the whole test split, in order."""
        return eval_batches(self.test, batch_size, self.num_workers, self.pin_memory)


def build_data(cfg: FinetuneConfig, rank: int = 0, world: int = 1, pin_memory: bool = False) -> LabeledData:
    train, test = build_source(cfg.data, "train"), build_source(cfg.data, "test")
    classes = check_labels(train, test, cfg)
    per_rank = per_rank_batch(cfg.optim.batch_size, world)  # optim.batch_size is the global batch
    if len(train) < cfg.optim.batch_size:
        raise UserError(f"{len(train)} training images are fewer than one global batch "
                        f"({cfg.optim.batch_size}): lower optim.batch_size")
    return LabeledData(train, test, classes, per_rank, cfg.data.num_workers, rank, world, pin_memory)
