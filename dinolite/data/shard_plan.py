"""Which samples of which shards a (rank, worker) reads in an epoch. Pure arithmetic, no I/O.

Training: the epoch's shard order is a seeded permutation (the same on every rank, no
communication). Laid end to end in that order, the shards form one sequence of ``total`` samples.
Its first ``steps * batch * world`` samples are cut into contiguous ranges: rank ``r`` takes the
``r``-th range of ``steps * batch`` samples, and splits it among its workers in whole batches.
So every sample is read by exactly one (rank, worker), every rank takes the same number of steps,
and the remainder (``total % (batch * world)`` samples at the end of the sequence) sits out that
epoch; since the shard order changes, so does the remainder. A worker reads its range's shards
only, skipping to its first sample in the first one (at most two partial shards per worker).

The DataLoader takes batches from its workers round-robin, so step ``s`` of a rank is batch
``s // W`` of worker *role* ``s % W``. To resume at step ``k``, the worker with DataLoader index
``i`` plays role ``(i + k) % W``; then the first batch delivered is step ``k`` again.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Piece:
    shard: int  # index into the shard list
    start: int  # first sample (position inside the shard)
    stop: int  # one past the last


def shard_order(num_shards: int, seed: int, epoch: int) -> list[int]:
    """The epoch's shard permutation: depends only on ``(seed, epoch)``."""
    order = list(range(num_shards))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


def pieces(counts: list[int], order: list[int], start: int, stop: int) -> list[Piece]:
    """Samples ``[start, stop)`` of the shards laid end to end in ``order``, as per-shard pieces."""
    out, offset = [], 0
    for shard in order:
        lo, hi = max(start, offset), min(stop, offset + counts[shard])
        if lo < hi:
            out.append(Piece(shard, lo - offset, hi - offset))
        offset += counts[shard]
        if offset >= stop:
            break
    return out


def steps_per_epoch(total: int, batch: int, world: int) -> int:
    return total // (batch * world)


def worker_batches(steps: int, workers: int, role: int) -> tuple[int, int]:
    """``(first, count)``: the contiguous block of a rank's ``steps`` batches that worker ``role`` makes."""
    base, extra = divmod(steps, workers)
    return role * base + min(role, extra), base + (role < extra)


def batches_before(step: int, workers: int, role: int) -> int:
    """How many of worker ``role``'s batches the rank had taken before ``step`` (round-robin order)."""
    return max(0, -(-(step - role) // workers))


def train_range(total: int, batch: int, world: int, rank: int, workers: int, role: int) -> tuple[int, int, int]:
    """``(start, stop, batches)``: the samples (in the epoch's sequence) this worker turns into batches."""
    steps = steps_per_epoch(total, batch, world)
    first, count = worker_batches(steps, workers, role)
    start = (rank * steps + first) * batch
    return start, start + count * batch, count


def eval_batch_ids(total: int, batch: int, workers: int, worker: int) -> list[int]:
    """Evaluation keeps the shards' order: batch ``j`` covers samples ``[j*batch, (j+1)*batch)`` and
    worker ``j % workers`` makes it, so the DataLoader's round-robin returns batches in order."""
    return list(range(worker, -(-total // batch), workers))
