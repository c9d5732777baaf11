"""``dinolite`` with one fault injected: on rank 1 only, every loss from step 3 on is NaN.

Run under torchrun by tests/finetune/test_distributed.py; the rest is the real command.
"""

import os
import sys

import torch

from dinolite.cli import main
from dinolite.finetune.trainer import FinetuneTrainer

real_step = FinetuneTrainer.train_step


def nan_on_rank_1(self, *args, **kwargs):
    loss, logs, correct = real_step(self, *args, **kwargs)
    if int(os.environ["RANK"]) == 1 and self.step >= 3:
        loss = torch.full_like(loss, float("nan"))
    return loss, logs, correct


FinetuneTrainer.train_step = nan_on_rank_1
sys.exit(main())
