"""DINO loss: cross-entropy from the centred, sharpened teacher to the student, over view pairs."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn


def _at_least_fp32(x: Tensor) -> Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


def dino_cross_entropy(student_out: Tensor, teacher_out: Tensor, center: Tensor, student_temp: float,
                       teacher_temp: float, n_global: int = 2) -> Tensor:
    """Mean over pairs (teacher global view i, student view j != i) of H(P_t^i, P_s^j).

    ``student_out`` is ``[V * B, K]`` and ``teacher_out`` ``[n_global * B, K]``, both view-major.
    The teacher is centred (``- center``) and sharpened (low ``teacher_temp``); it carries no
    gradient. Pairs where the student sees the same view as the teacher are skipped.
    """
    n_views = student_out.shape[0] // (teacher_out.shape[0] // n_global)
    log_p_s = F.log_softmax(_at_least_fp32(student_out) / student_temp, dim=-1).chunk(n_views)
    p_t = F.softmax((_at_least_fp32(teacher_out) - center) / teacher_temp, dim=-1).detach().chunk(n_global)
    total, pairs = 0.0, 0
    for i, q in enumerate(p_t):
        for j, log_p in enumerate(log_p_s):
            if i == j:
                continue
            total = total + torch.sum(-q * log_p, dim=-1).mean()
            pairs += 1
    return total / pairs


@torch.no_grad()
def teacher_stats(teacher_out: Tensor, center: Tensor, teacher_temp: float) -> tuple[Tensor, Tensor]:
    """Collapse monitors: mean per-sample entropy of P_t, and KL(mean P_t || uniform).

    Entropy near log(K) with KL near 0 means a uniform collapse; entropy near 0 with a large KL
    means one dimension dominates (DINO paper, section 5.3).
    """
    p = F.softmax((_at_least_fp32(teacher_out) - center) / teacher_temp, dim=-1)
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum(-1).mean()
    mean_p = p.mean(0)
    kl = (mean_p * torch.log(mean_p.clamp_min(1e-12) * p.shape[-1])).sum()
    return entropy, kl


class DINOLoss(nn.Module):
    """The DINO loss with its EMA center (a buffer, saved with checkpoints)."""

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9):
        super().__init__()
        self.student_temp, self.center_momentum = student_temp, center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(self, student_out: Tensor, teacher_out: Tensor, teacher_temp: float) -> Tensor:
        loss = dino_cross_entropy(student_out, teacher_out, self.center, self.student_temp, teacher_temp)
        # The center moves only after the loss used it: this step's teacher targets are centred
        # with the statistics of previous batches, never with their own.
        self.update_center(teacher_out)
        return loss

    @torch.no_grad()
    def update_center(self, teacher_out: Tensor) -> None:
        """center <- m * center + (1 - m) * mean teacher output over the global batch."""
        batch_sum = teacher_out.to(self.center.dtype).sum(dim=0, keepdim=True)
        count = teacher_out.shape[0]
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(batch_sum)
            count *= dist.get_world_size()
        self.center.mul_(self.center_momentum).add_(batch_sum / count, alpha=1 - self.center_momentum)

