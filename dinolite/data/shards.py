"""Webdataset shards as a data source: a streaming training loader and in-order evaluation.

``ShardSet`` describes a split (from its manifest) and iterates it in order for feature extraction;
``ShardLoader`` streams it for training as a ``base.TrainLoader``, like ``BatchLoader``. Splitting
rules are in ``shard_plan``.

Every worker batch travels with the worker's count of skipped samples, so the main process can
report bad data (undecodable images, samples lost to a truncated shard) without any shared state.
"""

from __future__ import annotations

import itertools
import random
import sys
from collections.abc import Iterator

import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..config import DataConfig
from . import shard_plan as plan
from .base import Batch, EvalBatch
from .folder import pad_batch
from .manifest import ShardInfo, ShardList, resolve_shards
from .shard_read import RawSample, decode, read_shard


def _worker() -> tuple[int, int]:
    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


def _loader(stream: IterableDataset, num_workers: int, pin_memory: bool) -> DataLoader:
    # Batches are made inside the workers (batch_size=None); a private generator keeps the global
    # RNG untouched, as BatchLoader does.
    return DataLoader(stream, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
                      prefetch_factor=2 if num_workers else None, generator=torch.Generator().manual_seed(0))


class ShardSet:
    """One split stored as shards: metadata from the manifest, decoded to bounded uint8 on demand.

    Images are decoded with the image folder's ``decode_bounded`` and padded onto a canvas of
    ``size`` = ``min(decode_size, the manifest's longest side)``, so 28-pixel Fashion-MNIST does
    not travel on a 256-pixel canvas.
    """

    def __init__(self, spec: str, decode_size: int = 256, shuffle_buffer: int = 1000, warn: bool = True):
        self.shard_list: ShardList = resolve_shards(spec)
        self.spec = spec
        self.channels = self.shard_list.channels
        self.classes = self.shard_list.classes
        self.size = min(decode_size, self.shard_list.max_side) if self.shard_list.max_side else decode_size
        self.shuffle_buffer = shuffle_buffer
        self.skipped_eval = 0  # bad samples met by eval_batches
        if warn:
            for line in self.shard_list.warnings:
                print(f"warning: {line}", file=sys.stderr, flush=True)

    def __len__(self) -> int:
        return self.shard_list.total

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def infos(self) -> list[ShardInfo]:
        return self.shard_list.shards

    @property
    def counts(self) -> list[int]:
        return [s.count for s in self.infos]

    def decode_batch(self, raws: list[RawSample]) -> tuple[list[torch.Tensor | None], torch.Tensor]:
        images = [decode(r, self.size, self.channels) for r in raws]
        return images, torch.tensor([r.label for r in raws], dtype=torch.int64)

    def eval_rows(self, batch_size: int, num_workers: int = 0, pin_memory: bool = False) -> Iterator[EvalBatch]:
        """All readable samples in shard order, each row named by its key; an undecodable sample is left out and
        listed by key, a sample missing from a damaged shard is left out and counted (``missing``)."""
        self.skipped_eval = 0
        stream = _EvalStream(self, batch_size)
        for images, hw, labels, keys, _role, skipped, bad in _loader(stream, num_workers, pin_memory):
            self.skipped_eval += skipped
            yield EvalBatch(images, hw, labels, list(keys), list(bad), skipped - len(bad))

    def eval_batches(self, batch_size: int, num_workers: int = 0, pin_memory: bool = False) -> Iterator[Batch]:
        """All readable samples in shard order, as ``(images, hw, labels)`` (bad ones skipped and counted)."""
        for b in self.eval_rows(batch_size, num_workers, pin_memory):
            if len(b.labels):
                yield b.images, b.hw, b.labels
        if self.skipped_eval:
            print(f"warning: skipped {self.skipped_eval} unreadable samples of {self.spec}", file=sys.stderr,
                  flush=True)


class _EvalStream(IterableDataset):
    """Worker ``w`` makes batches ``w, w + W, ...`` of the split in shard order (so the DataLoader's
    round-robin returns them in order). It passes once over the shards its batches touch, keeps only
    its own samples, and decodes only those."""

    def __init__(self, source: ShardSet, batch_size: int):
        self.source, self.batch = source, batch_size

    def __iter__(self):
        worker, workers = _worker()
        batch, total = self.batch, len(self.source)
        todo = plan.eval_batch_ids(total, batch, workers, worker)
        mine, pending, offset = set(todo), {j: [] for j in todo}, 0
        for info in self.source.infos:
            touched = [j for j in range(offset // batch, -(-(offset + info.count) // batch)) if j in mine]
            if touched:
                lo, hi = max(touched[0] * batch - offset, 0), min((touched[-1] + 1) * batch - offset, info.count)
                # positions stay right on a truncated shard: damage only cuts its tail
                for pos, raw in enumerate(read_shard(info.path, lo, hi), start=lo):
                    j = (offset + pos) // batch
                    if j in mine:
                        pending[j].append(raw)
            offset += info.count
            while todo and min((todo[0] + 1) * batch, total) <= offset:
                yield self._batch(todo.pop(0), pending, worker)

    def _batch(self, j: int, pending: dict, worker: int):
        raws = pending.pop(j)
        expected = min((j + 1) * self.batch, len(self.source)) - j * self.batch
        decoded, labels = self.source.decode_batch(raws)
        kept = [(i, img) for i, img in enumerate(decoded) if img is not None]
        good = [i for i, _ in kept]
        bad = [(r.key, "no image in the sample" if r.data is None else "undecodable image")
               for r, img in zip(raws, decoded, strict=True) if img is None]
        images, hw = pad_batch([img for _, img in kept], self.source.channels, self.source.size)
        return images, hw, labels[good], [raws[i].key for i in good], worker, expected - len(good), bad


class _TrainStream(IterableDataset):
    """One epoch of one rank: each worker shuffles its range's encoded samples, forms batches of
    consecutive slots, decodes, and fills slots whose sample is bad or missing (see ``_fill``)."""

    def __init__(self, source: ShardSet, batch: int, seed: int, epoch: int, start_step: int, rank: int, world: int):
        self.source, self.batch, self.seed, self.epoch = source, batch, seed, epoch
        self.start_step, self.rank, self.world = start_step, rank, world

    def raw_stream(self, role: int, workers: int) -> tuple[Iterator[RawSample], int]:
        counts = self.source.counts
        start, stop, nbatches = plan.train_range(sum(counts), self.batch, self.world, self.rank, workers, role)
        order = plan.shard_order(len(counts), self.seed, self.epoch)
        paths = [s.path for s in self.source.infos]
        pieces = plan.pieces(counts, order, start, stop)
        samples = (r for p in pieces for r in read_shard(paths[p.shard], p.start, p.stop))
        # The buffer's order depends only on (seed, epoch, rank, role): a resumed epoch replays it.
        rng = random.Random(((self.seed * 1_000_003 + self.epoch) * 4099 + self.rank) * 257 + role)
        shuffle = wds.shuffle(self.source.shuffle_buffer, initial=self.source.shuffle_buffer, rng=rng)
        return shuffle(iter(samples)), nbatches

    def __iter__(self):
        index, workers = _worker()
        role = (index + self.start_step) % workers  # see shard_plan: resume keeps the round-robin order
        raws, nbatches = self.raw_stream(role, workers)
        done = plan.batches_before(self.start_step, workers, role)
        for _ in range(done * self.batch):  # resume: skip whole batches without decoding them
            next(raws, None)
        skipped, reserve = 0, []
        blank = torch.zeros(self.source.channels, self.source.size, self.source.size, dtype=torch.uint8)
        for b in range(done, nbatches):
            slots = list(itertools.islice(raws, self.batch))
            if len(slots) < self.batch:
                # The shards hold fewer samples than their manifest says: this worker's share of the epoch
                # ends here (no sample is recycled to make up for it). An empty batch carries the count of
                # samples it lacks; the trainer warns and ends the epoch (see Pretrainer.fit).
                skipped += (nbatches - b) * self.batch
                empty = torch.zeros(0, self.source.channels, self.source.size, self.source.size, dtype=torch.uint8)
                yield empty, torch.zeros(0, 2, dtype=torch.int64), torch.zeros(0, dtype=torch.int64), [], role, skipped
                return
            decoded, labels = self.source.decode_batch(slots)
            keys = [r.key for r in slots]
            images, labels, keys, bad = _fill(decoded, labels, keys, self.batch, reserve, blank)
            skipped += bad
            reserve = list(zip(images, labels.tolist(), keys, strict=True))
            batch, hw = pad_batch(images, self.source.channels, self.source.size)
            yield batch, hw, labels, keys, role, skipped


def _fill(decoded, labels, keys, batch, reserve, blank):
    """Every rank must take the same number of full steps (DDP), so a slot without a good sample
    (undecodable, or missing from a truncated shard) takes a good one of the same batch, cycling;
    failing that one of the worker's previous batch; failing that a black image. Returns the
    ``batch`` images, their labels and keys, and how many slots were bad."""
    rows = zip(decoded, labels.tolist(), keys, strict=True)
    good = [(img, int(lab), key) for img, lab, key in rows if img is not None]
    bad = batch - len(good)
    donors = good or reserve or [(blank, -1, "")]
    out = good + [donors[i % len(donors)] for i in range(bad)]
    return [o[0] for o in out], torch.tensor([o[1] for o in out], dtype=torch.int64), [o[2] for o in out], bad


class ShardLoader:
    """Streams a ``ShardSet`` for training (a ``base.TrainLoader``, like ``BatchLoader``).

    ``steps_per_epoch = total // (batch_size * world)`` from the manifest. ``epoch(e, k)``
    yields exactly ``steps_per_epoch - k`` batches; the stream of epoch ``e`` depends only on
    ``(seed, e, rank, world, num_workers)``, and a resumed run skips the first ``k`` batches without
    decoding them, so it continues the epoch it was in with the same batches (same world size and
    workers). ``skipped_samples()`` counts bad samples since this loader was created, over all ranks.
    """

    def __init__(self, source: ShardSet, batch_size: int, seed: int, num_workers: int = 0,
                 rank: int = 0, world: int = 1, pin_memory: bool = False):
        self.source, self.batch_size, self.seed = source, batch_size, seed
        self.num_workers, self.rank, self.world, self.pin_memory = num_workers, rank, world, pin_memory
        self.steps_per_epoch = plan.steps_per_epoch(len(source), batch_size, world)
        if self.steps_per_epoch == 0:
            raise ValueError("fewer images than one global batch")
        self._skipped_before = 0  # finished epochs
        self._skipped_now: dict[int, int] = {}  # worker role -> its count in the current epoch

    def batches(self, epoch: int, start_step: int = 0):
        """``(images, hw, labels, keys, worker_role, worker_skipped_so_far)`` per step (tests use the keys)."""
        self._skipped_before += sum(self._skipped_now.values())
        self._skipped_now = {}
        stream = _TrainStream(self.source, self.batch_size, self.seed, epoch, start_step, self.rank, self.world)
        for item in _loader(stream, self.num_workers, self.pin_memory):
            self._skipped_now[item[4]] = item[5]
            yield item

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        """The epoch's ``(images, hw, labels)``; fewer than ``steps_per_epoch - start_step`` when shards hold
        fewer samples than their manifest says (a worker whose share ran dry sends an empty batch, dropped here)."""
        for images, hw, labels, *_ in self.batches(epoch, start_step):
            if len(images):
                yield images, hw, labels

    def skipped_samples(self) -> int:
        """Bad samples skipped so far, summed over ranks (a collective: every rank must call it)."""
        local = self._skipped_before + sum(self._skipped_now.values())
        if self.world == 1 or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return local
        dev = torch.device("cuda", torch.cuda.current_device()) if torch.distributed.get_backend() == "nccl" else "cpu"
        t = torch.tensor([local], dtype=torch.int64, device=dev)
        torch.distributed.all_reduce(t)
        return int(t.item())


def build_shard_set(cfg: DataConfig, split: str) -> ShardSet:
    """``data.root`` holds the training shards, ``data.eval_shards`` the evaluation split's."""
    if split == "train" and cfg.eval_shards:
        resolve_shards(cfg.eval_shards)  # a missing evaluation shard must stop the run before training, too
    spec = cfg.root if split == "train" else cfg.eval_shards
    return ShardSet(spec, cfg.decode_size, cfg.shuffle_buffer)
