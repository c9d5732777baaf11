"""Where a run executes: device, CPU threads, process group, per-rank batch, batches copied ahead."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch

from ..distributed import DistInfo, init_from_env
from ..errors import UserError


def resolve_device(name: str, option: str = "train.device") -> torch.device:
    """"auto" -> cuda when visible, else cpu; ``option`` names the setting in the error message."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{option} cuda was asked for but no CUDA device is visible: use {option} cpu or auto")
    return torch.device(name)


def start(device_name: str, dist: DistInfo | None = None) -> tuple[torch.device, DistInfo]:
    """The run's device and its process group (joined from torchrun's or SLURM's environment, if any)."""
    device = resolve_device(device_name)
    return device, dist or init_from_env(device.type)


@contextmanager
def run_threads(threads: int):
    """Torch's CPU thread count set to ``threads`` (0: unchanged) for one run, the caller's put back after.

    A library call must not leave the process with another setting (a test suite, a notebook).
    """
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def per_rank_batch(global_batch: int, world: int) -> int:
    """``optim.batch_size`` is the global batch; each of the ``world`` processes takes an equal share."""
    if global_batch % world:
        raise UserError(f"optim.batch_size={global_batch} (the global batch) is not divisible by the "
                        f"{world} processes: use a multiple of {world}, or another number of processes")
    return global_batch // world


def to_device_ahead(batches: Iterable[tuple], device: torch.device) -> Iterator[tuple]:
    """Yield each batch (a tuple of tensors) already on ``device``: batch i + 1 is copied on a side
    stream while step i runs.

    The copies read the loader's pinned memory; the compute stream waits for a batch's copy before
    using it, and ``record_stream`` keeps the allocator from reusing its memory too early. Without
    CUDA the batches pass through unchanged (the task's step copies them).
    """
    if device.type != "cuda":
        yield from batches
        return
    side, main = torch.cuda.Stream(device), torch.cuda.current_stream(device)

    def copy(batch):
        with torch.cuda.stream(side):
            return [t.to(device, non_blocking=True) for t in batch]

    it = iter(batches)
    ahead = next(it, None)
    ahead = None if ahead is None else copy(ahead)
    while ahead is not None:
        main.wait_stream(side)
        for t in ahead:
            t.record_stream(main)
        following = next(it, None)
        current, ahead = ahead, None if following is None else copy(following)
        yield tuple(current)
