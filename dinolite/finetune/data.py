"""Labelled training batches and the checks that the data really is labelled.

The sources and the loaders are pretraining's (``build_source``, ``build_loader``: rank split, seeded
order that resumes mid-epoch); their batches carry the labels that pretraining ignores.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from ..data import Batch, Source, TrainLoader, build_loader, build_source, eval_batches
from ..data.base import check_class_labels
from ..engine.runtime import per_rank_batch
from ..errors import UserError
from .config import FinetuneConfig


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
    """Fine-tuning's labels must be class indices (see ``data.base.check_class_labels``)."""
    check_class_labels(labels, num_classes, where, "fine-tuning")


@dataclass
class LabeledData:
    """The two splits, their classes, and how to batch them on this rank."""

    train: Source
    test: Source
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
        """This rank's ``(images, hw, labels)`` training batches in ``seed``'s order (resumable mid-epoch)."""
        return build_loader(self.train, self.batch_size, seed, self.num_workers, self.rank, self.world, self.pin_memory)

    def test_batches(self, batch_size: int) -> Iterable[Batch]:
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
