"""The loss terms of the four methods, as pure functions of logits, labels and features.

Every distillation term is ``T^2 * KL(teacher_T || student_T)``: the teacher's softened
probabilities are the target, the student's log-probabilities are what is trained, and the T^2
factor keeps the gradient scale independent of T (Hinton et al. 2015). The teacher side is always
detached here, so no gradient can reach a teacher whatever the caller passes.
"""

from __future__ import annotations

import functools
import operator

import torch.nn.functional as F
from torch import Tensor


def kd_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """``T^2 * KL(softmax(t/T) || softmax(s/T))``, summed over classes, averaged over the batch."""
    t = temperature
    log_p_student = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.detach().float() / t, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * (t * t)


def cross_entropy(logits: Tensor, labels: Tensor, label_smoothing: float = 0.0) -> Tensor:
    return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)


def born_again_loss(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, alpha: float,
                    temperature: float, label_smoothing: float = 0.0) -> tuple[Tensor, dict]:
    """``alpha * CE(labels) + (1 - alpha) * T^2 * KL(teacher_T || student_T)`` (Furlanello et al. 2018)."""
    ce = cross_entropy(student_logits, labels, label_smoothing)
    kd = kd_kl(student_logits, teacher_logits, temperature)
    return alpha * ce + (1 - alpha) * kd, {"ce": ce.detach(), "kd": kd.detach()}


def consistency_loss(clean_logits: Tensor, aug_logits: Tensor, labels: Tensor, weight: float, temperature: float,
                     label_smoothing: float = 0.0) -> tuple[Tensor, dict]:
    """``CE(clean) + lambda * T^2 * KL(p_T(x) || p_T(aug(x)))``; the clean prediction is the (detached) target."""
    ce = cross_entropy(clean_logits, labels, label_smoothing)
    cons = kd_kl(aug_logits, clean_logits, temperature)
    return ce + weight * cons, {"ce": ce.detach(), "consistency": cons.detach()}


def hint_loss(shallow: Tensor, deep: Tensor) -> Tensor:
    """Mean squared distance of a (projected) shallow feature to the detached deepest feature."""
    return F.mse_loss(shallow.float(), deep.detach().float())


def _sum(xs: list[Tensor]) -> Tensor:
    """The sum of a non-empty list of tensors (as ``sum()``, which types as ``Tensor | int``)."""
    return functools.reduce(operator.add, xs)


def layerwise_loss(exit_logits: list[Tensor], labels: Tensor, temperature: float, kd_weight: float,
                   hint_pairs: list[tuple[Tensor, Tensor]] | None = None, hint_weight: float = 0.0,
                   label_smoothing: float = 0.0) -> tuple[Tensor, dict]:
    """Be Your Own Teacher (Zhang et al. 2019): CE on every exit, plus ``kd_weight`` times the KL from
    the final exit's softened, detached prediction to each shallower exit, plus an optional hint.

    ``exit_logits`` is ordered shallow to deep; the last entry is the final classifier.
    """
    final = exit_logits[-1]
    ces = [cross_entropy(z, labels, label_smoothing) for z in exit_logits]
    kds = [kd_kl(z, final, temperature) for z in exit_logits[:-1]]
    loss = _sum(ces) + kd_weight * _sum(kds) if kds else _sum(ces)
    logs = {"ce": _sum(ces).detach() / len(ces), "kd": (_sum(kds).detach() / len(kds)) if kds else ces[0].detach() * 0}
    if hint_pairs and hint_weight > 0:
        hint = _sum([hint_loss(s, d) for s, d in hint_pairs])
        loss = loss + hint_weight * hint
        logs["hint"] = hint.detach()
    return loss, logs
