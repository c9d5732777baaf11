"""DINO loss: cross-entropy from the centred, sharpened teacher to the student, over view pairs."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn


def at_least_fp32(x: Tensor) -> Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


def dino_cross_entropy(student_out: Tensor, teacher_out: Tensor, center: Tensor, student_temp: float,
                       teacher_temp: float, n_global: int = 2, p_teacher: Tensor | None = None) -> Tensor:
    """Mean over pairs (teacher global view i, student view j != i) of H(P_t^i, P_s^j).

    ``student_out`` is ``[V * B, K]`` and ``teacher_out`` ``[n_global * B, K]``, both view-major.
    The teacher is centred (``- center``) and sharpened (low ``teacher_temp``); it carries no
    gradient. Pairs where the student sees the same view as the teacher are skipped. ``p_teacher``
    replaces the centred softmax with given targets (Sinkhorn-Knopp).
    """
    if p_teacher is None:
        p_teacher = teacher_targets(teacher_out, center, teacher_temp)
    return pairwise_cross_entropy(student_out, p_teacher, student_temp, n_global, same_view=False)


def pairwise_cross_entropy(student_out: Tensor, p_teacher: Tensor, student_temp: float, n_global: int = 2,
                           same_view: bool = False) -> Tensor:
    """Mean over pairs (teacher global view i, student view j) of H(P_t^i, P_s^j), ``P_s`` the student's softmax
    at ``student_temp``; the pairs where both see the same view only when ``same_view`` (distillation, not DINO).
    ``student_out`` ``[V * B, K]`` and ``p_teacher`` ``[n_global * B, K]``, both view-major; no gradient reaches
    the targets."""
    n_views = student_out.shape[0] // (p_teacher.shape[0] // n_global)
    log_p_s = F.log_softmax(at_least_fp32(student_out) / student_temp, dim=-1).chunk(n_views)
    total, pairs = student_out.new_zeros((), dtype=log_p_s[0].dtype), 0
    for i, q in enumerate(p_teacher.detach().chunk(n_global)):
        for j, log_p in enumerate(log_p_s):
            if i == j and not same_view:
                continue
            total = total + torch.sum(-q * log_p, dim=-1).mean()
            pairs += 1
    return total / pairs


@torch.no_grad()
def sinkhorn_knopp(teacher_out: Tensor, teacher_temp: float, iterations: int = 3) -> Tensor:
    """Teacher targets by Sinkhorn-Knopp (SwAV; dinov2's alternative to the EMA center): ``[N, K]``
    probabilities whose rows are distributions and whose K prototypes each take an equal share of
    the (global) batch, so no single output and no uniform output can win.

    Alternates normalising the ``K x N`` matrix exp(t / temp) so each prototype row sums to 1 / K
    and each sample column to 1 / N_global; the row sums are all-reduced across ranks, so several
    processes give the one-process result on the concatenated batch.
    """
    logits = at_least_fp32(teacher_out) / teacher_temp
    # Subtracting the global max leaves every ratio unchanged and keeps exp() finite.
    top = logits.max().clone() if logits.numel() else logits.new_tensor(float("-inf"))
    n_global = logits.new_tensor(float(logits.shape[0]))  # a rank may hold fewer rows (iBOT's masked patches)
    distributed = dist.is_available() and dist.is_initialized()
    if distributed:
        dist.all_reduce(top, op=dist.ReduceOp.MAX)
        dist.all_reduce(n_global)
    q = torch.exp(logits - top).T  # [K, N]
    k = q.shape[0]
    total = q.sum()
    if distributed:
        dist.all_reduce(total)
    q /= total
    for _ in range(iterations):
        rows = q.sum(dim=1, keepdim=True)
        if distributed:
            dist.all_reduce(rows)
        q /= rows * k
        q /= q.sum(dim=0, keepdim=True) * n_global
    return (q * n_global).T


def teacher_targets(teacher_out: Tensor, center: Tensor, teacher_temp: float, centering: str = "center",
                    iterations: int = 3) -> Tensor:
    """P_t: softmax of the centred, sharpened teacher output, or the Sinkhorn-Knopp assignment."""
    if centering == "sinkhorn_knopp":
        return sinkhorn_knopp(teacher_out, teacher_temp, iterations)
    return F.softmax((at_least_fp32(teacher_out) - center) / teacher_temp, dim=-1)


def koleo_loss(x: Tensor, eps: float = 1e-8) -> Tensor:
    """KoLeo regulariser (Sablayrolles et al. 2019; dinov2): -mean_i log(min_{j != i} ||x_i - x_j||) over the
    L2-normalised rows of ``x``. Minimising it pushes each feature away from its nearest neighbour,
    spreading the batch over the sphere. Computed within the given batch (per crop, per rank, as dinov2)."""
    x = F.normalize(at_least_fp32(x), dim=-1, eps=eps)
    with torch.no_grad():
        sims = x @ x.T
        sims.fill_diagonal_(-2.0)  # never one's own neighbour (cosines are >= -1)
        nearest = sims.argmax(dim=1)
    return -torch.log((x - x[nearest]).norm(dim=-1) + eps).mean()


@torch.no_grad()
def teacher_stats(teacher_out: Tensor, center: Tensor, teacher_temp: float, centering: str = "center",
                  iterations: int = 3) -> tuple[Tensor, Tensor]:
    """Collapse monitors: mean per-sample entropy of P_t, and KL(mean P_t || uniform).

    Entropy near log(K) with KL near 0 means a uniform collapse; entropy near 0 with a large KL
    means one dimension dominates (DINO paper, section 5.3).
    """
    p = teacher_targets(teacher_out, center, teacher_temp, centering, iterations)
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum(-1).mean()
    mean_p = p.mean(0)
    kl = (mean_p * torch.log(mean_p.clamp_min(1e-12) * p.shape[-1])).sum()
    return entropy, kl


class CenteredLoss(nn.Module):
    """What the DINO and iBOT losses share: temperatures, the teacher targets, and an EMA center (a buffer,
    saved with checkpoints) of the teacher's outputs over the global batch."""

    center: Tensor

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9,
                 centering: str = "center", sinkhorn_iterations: int = 3):
        super().__init__()
        self.student_temp, self.center_momentum = student_temp, center_momentum
        self.centering, self.sinkhorn_iterations = centering, sinkhorn_iterations
        self.register_buffer("center", torch.zeros(1, out_dim))

    def targets(self, teacher_out: Tensor, teacher_temp: float) -> Tensor:
        return teacher_targets(teacher_out, self.center, teacher_temp, self.centering, self.sinkhorn_iterations)

    @torch.no_grad()
    def update_center(self, teacher_out: Tensor, momentum: float | None = None) -> None:
        """center <- m * center + (1 - m) * mean teacher output over the rows of the global batch (ranks may
        hold different numbers of rows, as iBOT's masked patches; none anywhere leaves the center as it is).
        ``momentum`` 0 restarts the center from this batch (a continued run's unfreeze, ``dinolite.reuse``)."""
        stats = torch.cat([teacher_out.to(self.center.dtype).sum(dim=0),
                           self.center.new_tensor([float(teacher_out.shape[0])])])
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(stats)
        count = stats[-1]
        mean = stats[:-1].unsqueeze(0) / count.clamp_min(1.0)
        m = self.center_momentum if momentum is None else momentum
        moved = self.center * m + mean * (1 - m)
        self.center.copy_(torch.where(count > 0, moved, self.center))


class DINOLoss(CenteredLoss):
    """The DINO loss with its EMA center."""

    def forward(self, student_out: Tensor, teacher_out: Tensor, teacher_temp: float) -> Tensor:
        p_t = self.targets(teacher_out, teacher_temp)
        loss = dino_cross_entropy(student_out, teacher_out, self.center, self.student_temp, teacher_temp, p_teacher=p_t)
        # The center moves only after the loss used it: this step's teacher targets are centred
        # with the statistics of previous batches, never with their own.
        self.update_center(teacher_out)
        return loss


def ibot_cross_entropy(student_patch: Tensor, p_teacher: Tensor, mask: Tensor,
                       student_temp: float) -> tuple[Tensor, Tensor]:
    """iBOT's masked-patch term, summed over crops: for each masked crop, the mean over its masked patches
    of H(P_t, P_s); also returns the number of masked crops (the caller divides by the global count).

    ``student_patch`` and ``p_teacher`` are ``[M, K]``, one row per true entry of ``mask`` ``[C, h, w]``
    in row-major order (crop by crop). Unmasked patches do not count (iBOT, eq. 2; dinov2 weights
    each crop by 1 / its masked patches the same way).
    """
    per_crop = mask.flatten(1).sum(dim=1)
    crop_of_patch = torch.repeat_interleave(torch.arange(len(per_crop), device=mask.device), per_crop)
    weights = 1.0 / per_crop[crop_of_patch].to(torch.float32)
    log_p_s = F.log_softmax(at_least_fp32(student_patch) / student_temp, dim=-1)
    ce = torch.sum(-p_teacher.detach() * log_p_s, dim=-1)
    return (ce * weights).sum(), (per_crop > 0).sum()


class IBOTPatchLoss(CenteredLoss):
    """iBOT's masked-patch loss with its own center (patch outputs are centred apart from the CLS ones)."""

    def forward(self, student_patch: Tensor, teacher_patch: Tensor, mask: Tensor, teacher_temp: float) -> Tensor:
        """``student_patch`` / ``teacher_patch``: ``[M, K]`` outputs at the masked patches of this rank's crops."""
        p_t = self.targets(teacher_patch, teacher_temp)
        total, crops = ibot_cross_entropy(student_patch, p_t, mask, self.student_temp)
        crops, world = crops.to(torch.float32), 1
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(crops)
            world = dist.get_world_size()
        # Divided by the masked crops of the whole batch and multiplied by the world size: DDP averages the
        # ranks' gradients, so the result is the one-process gradient however the masks fall on the ranks.
        loss = total * world / crops.clamp_min(1.0)
        self.update_center(teacher_patch)  # after the loss, as for the CLS center
        return loss
