"""The random streams of a run, one table for pretraining and fine-tuning.

Every stream is reseeded at every step from ``(train.seed, step, stream)``, so a checkpoint needs no
RNG state and a run resumes exactly, on any number of processes.

=================  ================================  ==============================================
stream             seed                              drawn
=================  ================================  ==============================================
augmentation       ``step_seed(seed, step, 0)``      per *global* sample: every rank draws the whole
                                                     global batch's parameters and keeps its slice
                                                     (``augment.GlobalBatchRNG``), so crops do not
                                                     depend on the number of processes
iBOT masks         ``step_seed(seed, step, 0)``      per global sample (``masking.crop_seed``)
drop path          ``step_seed(seed, step, 1+rank)`` per rank (torch's global stream): with
                                                     drop path on, 2 processes differ from 1
data order         ``(seed, epoch)``                 the loader's permutation, split by rank
model init         ``train.seed``                    once, identical on every rank
=================  ================================  ==============================================

Fine-tuning follows the same table with its model's seed (born-again generation k: seed + k).
"""

from __future__ import annotations

AUGMENT = 0


def drop_path(rank: int) -> int:
    """The drop-path stream of ``rank`` (torch's global generator)."""
    return 1 + rank


def step_seed(seed: int, step: int, stream: int) -> int:
    """The seed of one random stream at one step (see the table above)."""
    return ((seed * 1_000_003 + step) * 1_009 + stream) % (2**63)
