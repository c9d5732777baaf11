"""The DINO loss against an independent implementation written from the paper's equations."""

import math

import numpy as np
import pytest
import torch

from dinolite.loss import DINOLoss, teacher_stats
from dinolite.schedules import teacher_temperature


def reference_step(student, teacher, center, tau_s, tau_t, m, batch):
    """Paper, Algorithm 1 and eq. (3), per sample in float64 numpy, loop over every pair.

    loss = mean over pairs (t in global views, s in all views, s != t) of
           mean over samples of  -sum_k P_t[k] log P_s[k],
    P_t = softmax((g_t - C) / tau_t), P_s = softmax(g_s / tau_s), then C <- m C + (1 - m) mean(g_t).
    """
    def softmax(z):
        z = z - z.max()
        e = np.exp(z)
        return e / e.sum()

    n_views, n_global = student.shape[0] // batch, teacher.shape[0] // batch
    pair_losses = []
    for t in range(n_global):
        for s in range(n_views):
            if s == t:
                continue
            per_sample = []
            for b in range(batch):
                p_t = softmax((teacher[t * batch + b] - center) / tau_t)
                p_s = softmax(student[s * batch + b] / tau_s)
                per_sample.append(-(p_t * np.log(p_s)).sum())
            pair_losses.append(np.mean(per_sample))
    new_center = m * center + (1 - m) * teacher.mean(axis=0)
    return float(np.mean(pair_losses)), new_center


@pytest.mark.parametrize("n_local", [0, 1, 4])
def test_loss_matches_reference_over_steps(n_local):
    torch.manual_seed(n_local)
    batch, k, tau_s, m = 3, 17, 0.1, 0.9
    loss_fn = DINOLoss(k, student_temp=tau_s, center_momentum=m).double()
    center = np.zeros(k)
    steps_per_epoch, warm_epochs = 2, 2
    for step in range(6):
        tau_t = teacher_temperature(step, steps_per_epoch, 0.04, 0.07, warm_epochs)
        student = torch.randn((2 + n_local) * batch, k, dtype=torch.float64) * 3
        teacher = torch.randn(2 * batch, k, dtype=torch.float64) * 3 + 1.0
        loss = loss_fn(student, teacher, tau_t)
        ref, center = reference_step(student.numpy(), teacher.numpy(), center, tau_s, tau_t, m, batch)
        assert loss.item() == pytest.approx(ref, rel=1e-6)
        np.testing.assert_allclose(loss_fn.center.numpy()[0], center, rtol=1e-6, atol=1e-12)
    assert not np.allclose(center, 0)  # the center really moved, so later steps tested the centering


def test_teacher_temperature_warmup_is_linear_then_constant():
    assert teacher_temperature(0, 10, 0.04, 0.07, 3) == pytest.approx(0.04)
    assert teacher_temperature(15, 10, 0.04, 0.07, 3) == pytest.approx(0.055)
    assert teacher_temperature(30, 10, 0.04, 0.07, 3) == pytest.approx(0.07)
    assert teacher_temperature(99, 10, 0.04, 0.07, 0) == pytest.approx(0.07)


def test_loss_gradient_reaches_student_only():
    student = torch.randn(8, 5, requires_grad=True)
    teacher = torch.randn(4, 5, requires_grad=True)
    DINOLoss(5)(student, teacher, 0.04).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_teacher_stats_detect_both_collapses():
    k = 32
    uniform = torch.zeros(6, k)  # every sample's P_t is uniform
    h, kl = teacher_stats(uniform, torch.zeros(1, k), 0.04)
    assert h.item() == pytest.approx(math.log(k), rel=1e-5) and kl.item() == pytest.approx(0, abs=1e-5)
    one_dim = torch.zeros(6, k)
    one_dim[:, 3] = 10.0  # every sample picks dimension 3
    h, kl = teacher_stats(one_dim, torch.zeros(1, k), 0.04)
    assert h.item() < 1e-3 and kl.item() == pytest.approx(math.log(k), rel=1e-3)
