"""The DINO loss against an independent implementation written from the paper's equations."""

import math

import numpy as np
import pytest
import torch

from dinolite.maths.loss import DINOLoss, teacher_stats
from dinolite.maths.schedules import teacher_temperature


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
        tau_t = teacher_temperature(step, steps_per_epoch * warm_epochs, 0.04, 0.07)
        student = torch.randn((2 + n_local) * batch, k, dtype=torch.float64) * 3
        teacher = torch.randn(2 * batch, k, dtype=torch.float64) * 3 + 1.0
        loss = loss_fn(student, teacher, tau_t)
        ref, center = reference_step(student.numpy(), teacher.numpy(), center, tau_s, tau_t, m, batch)
        assert loss.item() == pytest.approx(ref, rel=1e-6)
        np.testing.assert_allclose(loss_fn.center.numpy()[0], center, rtol=1e-6, atol=1e-12)
    assert not np.allclose(center, 0)  # the center really moved, so later steps tested the centering


def test_teacher_temperature_warmup_is_linear_then_constant():
    assert teacher_temperature(0, 30, 0.04, 0.07) == pytest.approx(0.04)
    assert teacher_temperature(15, 30, 0.04, 0.07) == pytest.approx(0.055)
    assert teacher_temperature(30, 30, 0.04, 0.07) == pytest.approx(0.07)
    assert teacher_temperature(99, 0, 0.04, 0.07) == pytest.approx(0.07)


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


# ---- Sinkhorn-Knopp targets -------------------------------------------------------------------------

from dinolite.maths.loss import sinkhorn_knopp  # noqa: E402


def sinkhorn_reference(t: np.ndarray, temp: float, iterations: int) -> np.ndarray:
    """From the equations (SwAV, Caron et al. 2020, eq. 3 and appendix): Q = diag(u) exp(t^T / temp) diag(v),
    with u scaled so the K prototype rows sum to 1/K and v so the B sample columns sum to 1/B, alternately;
    the returned [B, K] assignment is B * Q^T (each sample a distribution)."""
    m = np.exp((t - t.max()) / temp).T  # [K, B]
    k, b = m.shape
    m = m / m.sum()
    u, v = np.ones(k), np.ones(b)
    for _ in range(iterations):
        u = (1.0 / k) / (m * v[None, :]).sum(axis=1) * 1.0
        v = (1.0 / b) / (u[:, None] * m).sum(axis=0)
    return (b * (u[:, None] * m * v[None, :])).T


@pytest.mark.parametrize("iterations", [1, 3, 10])
def test_sinkhorn_knopp_matches_the_reference(iterations):
    g = torch.Generator().manual_seed(iterations)
    t = torch.randn(12, 7, generator=g, dtype=torch.float64)
    got = sinkhorn_knopp(t, 0.1, iterations).numpy()
    np.testing.assert_allclose(got, sinkhorn_reference(t.numpy(), 0.1, iterations), rtol=1e-9, atol=1e-12)


def test_sinkhorn_knopp_rows_are_distributions_and_columns_share_the_batch():
    g = torch.Generator().manual_seed(0)
    t = torch.randn(64, 16, generator=g, dtype=torch.float64) * 2
    q = sinkhorn_knopp(t, 0.5, iterations=200)
    torch.testing.assert_close(q.sum(1), torch.ones(64, dtype=torch.float64))  # each sample a distribution
    torch.testing.assert_close(q.sum(0), torch.full((16,), 64 / 16, dtype=torch.float64), rtol=1e-6, atol=1e-6)
    few = sinkhorn_knopp(t, 0.5, iterations=3)
    torch.testing.assert_close(few.sum(1), torch.ones(64, dtype=torch.float64))  # the last step normalises samples


def test_sinkhorn_knopp_breaks_a_collapsed_teacher():
    """A teacher that gives every image nearly the same output: the softmax of the centred output is
    flat, Sinkhorn-Knopp still spreads the batch over the prototypes (what keeps it from uniform collapse)."""
    g = torch.Generator().manual_seed(1)
    t = torch.randn(1, 32, generator=g).repeat(256, 1) + 0.01 * torch.randn(256, 32, generator=g)
    q = sinkhorn_knopp(t, 0.04, iterations=3)
    assert (q.sum(0) / 256 * 32).sub(1).abs().max() < 0.5  # each prototype gets about 1/32 of the batch
    assert q.argmax(1).unique().numel() > 16


def test_dino_loss_with_sinkhorn_knopp_uses_its_targets():
    torch.manual_seed(0)
    student, teacher = torch.randn(4 * 5, 9, dtype=torch.float64), torch.randn(2 * 5, 9, dtype=torch.float64)
    loss_fn = DINOLoss(9, centering="sinkhorn_knopp", sinkhorn_iterations=3).double()
    q = sinkhorn_knopp(teacher, 0.04, 3).numpy()
    log_p = torch.log_softmax(student / 0.1, dim=-1).numpy()
    pairs = [-(q[i * 5:(i + 1) * 5] * log_p[j * 5:(j + 1) * 5]).sum(1).mean()
             for i in range(2) for j in range(4) if i != j]
    assert loss_fn(student, teacher, 0.04).item() == pytest.approx(np.mean(pairs), rel=1e-9)


# ---- KoLeo ----------------------------------------------------------------------------------------

from dinolite.maths.loss import koleo_loss  # noqa: E402


def koleo_reference(x: np.ndarray) -> float:
    """Kozachenko-Leonenko (Sablayrolles et al. 2019, eq. 5 up to constants): -1/n sum_i log rho_i, with
    rho_i the Euclidean distance from the L2-normalised x_i to its nearest other point."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    dist = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(dist, np.inf)
    return float(-np.log(dist.min(axis=1)).mean())


@pytest.mark.parametrize("n,d", [(2, 3), (9, 4), (64, 16)])
def test_koleo_matches_the_reference(n, d):
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(n), dtype=torch.float64) * 5
    assert koleo_loss(x).item() == pytest.approx(koleo_reference(x.numpy()), rel=1e-6)  # eps = 1e-8 in the log


def test_koleo_gradient_spreads_the_closest_pair():
    x = torch.tensor([[1.0, 0.0], [0.995, 0.0998], [-1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    before = koleo_loss(x)
    before.backward()
    with torch.no_grad():
        y = x - 0.01 * x.grad
    assert koleo_loss(y) < before  # a descent step moves the two nearly equal points apart
    angle = lambda a, b: torch.arccos(torch.nn.functional.cosine_similarity(a, b, dim=0))  # noqa: E731
    assert angle(y[0], y[1]) > angle(x[0].detach(), x[1].detach())


def ibot_reference(student_tokens, teacher_tokens, mask, center, tau_s, tau_t, m):
    """iBOT (Zhou et al. 2022), eq. 2 and its centering, per crop in float64 numpy, one patch at a time:
    L = mean over crops with a mask of ( mean over that crop's masked patches u of
        -sum_k P_t(u)[k] log P_s(u)[k] ),  P_t = softmax((t_u - C) / tau_t) of the *unmasked* teacher view,
    P_s = softmax(s_u / tau_s) of the masked student view; C <- m C + (1 - m) mean over masked patches of t_u.
    ``student_tokens`` / ``teacher_tokens`` are [crops, h, w, K]: every patch's output, masked or not."""
    def softmax(z):
        e = np.exp(z - z.max())
        return e / e.sum()

    per_crop, used = [], []
    for c in range(mask.shape[0]):
        ces = []
        for i in range(mask.shape[1]):
            for j in range(mask.shape[2]):
                if mask[c, i, j]:
                    p_t = softmax((teacher_tokens[c, i, j] - center) / tau_t)
                    p_s = softmax(student_tokens[c, i, j] / tau_s)
                    ces.append(-(p_t * np.log(p_s)).sum())
                    used.append(teacher_tokens[c, i, j])
        if ces:
            per_crop.append(np.mean(ces))
    return float(np.mean(per_crop)), m * center + (1 - m) * np.mean(used, axis=0)


def test_ibot_loss_matches_the_reference_over_steps():
    """Only masked patches count (the unmasked ones hold garbage that must not matter), each masked crop
    weighs the same whatever its number of masked patches, and the patch center moves after the loss."""
    from dinolite.maths.loss import IBOTPatchLoss

    rng = np.random.default_rng(0)
    loss_fn = IBOTPatchLoss(out_dim=12, student_temp=0.1, center_momentum=0.9)
    center = np.zeros(12)
    for step in range(3):
        mask = rng.random((6, 3, 4)) < 0.3
        mask[0] = False  # a crop without a mask does not count
        mask[1, 0, 0] = True
        s = rng.normal(size=(6, 3, 4, 12)) * 2
        t = rng.normal(size=(6, 3, 4, 12)) * 2
        want, center = ibot_reference(s, t, mask, center, 0.1, 0.04, 0.9)
        st, tt, mt = torch.tensor(s, dtype=torch.float32), torch.tensor(t, dtype=torch.float32), torch.tensor(mask)
        st[~mt] = 1e6  # unmasked outputs are never read
        got = loss_fn(st[mt], tt[mt], mt, teacher_temp=0.04)
        assert got.item() == pytest.approx(want, rel=1e-5), step
        np.testing.assert_allclose(loss_fn.center[0].numpy(), center, rtol=1e-5, atol=1e-6)


def test_ibot_loss_without_any_mask_is_zero_and_keeps_the_center():
    from dinolite.maths.loss import IBOTPatchLoss

    loss_fn = IBOTPatchLoss(out_dim=5)
    loss_fn.center.fill_(0.3)
    got = loss_fn(torch.zeros(0, 5, requires_grad=True), torch.zeros(0, 5), torch.zeros(4, 2, 2, dtype=torch.bool), 0.04)
    assert got.item() == 0.0
    assert torch.equal(loss_fn.center, torch.full((1, 5), 0.3))


def test_ibot_loss_with_sinkhorn_knopp_targets():
    """With loss.centering=sinkhorn_knopp the patch targets are Sinkhorn-Knopp over the masked patches."""
    from dinolite.maths.loss import IBOTPatchLoss, ibot_cross_entropy, sinkhorn_knopp

    torch.manual_seed(0)
    mask = torch.rand(5, 3, 3) < 0.5
    s, t = torch.randn(int(mask.sum()), 8), torch.randn(int(mask.sum()), 8)
    got = IBOTPatchLoss(8, centering="sinkhorn_knopp", sinkhorn_iterations=3)(s, t, mask, 0.05)
    q = torch.tensor(sinkhorn_reference(t.double().numpy(), 0.05, 3), dtype=torch.float32)
    total, crops = ibot_cross_entropy(s, q, mask, 0.1)
    assert got.item() == pytest.approx((total / crops).item(), rel=1e-5)
    torch.testing.assert_close(sinkhorn_knopp(t, 0.05, 3), q, rtol=1e-4, atol=1e-6)
