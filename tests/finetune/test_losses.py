"""The loss terms against references written here from the equations (numpy, float64)."""

import numpy as np
import pytest
import torch

from dinolite.finetune import losses


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def ref_kd(student, teacher, t):
    """T^2 * mean_i sum_c p_t log(p_t / p_s), with p = softmax(z / T): the teacher is the target."""
    ps, pt = softmax(student / t), softmax(teacher / t)
    return t * t * np.mean(np.sum(pt * (np.log(pt) - np.log(ps)), axis=1))


def ref_ce(logits, labels, eps=0.0):
    logp = np.log(softmax(logits))
    n, c = logits.shape
    target = np.full((n, c), eps / c)
    target[np.arange(n), labels] += 1 - eps
    return np.mean(-(target * logp).sum(axis=1))


def logits(seed, n=6, c=5, scale=3.0):
    return torch.randn(n, c, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale


@pytest.mark.parametrize("t", [1.0, 2.0, 4.0])
def test_kd_kl_direction_and_t_squared(t):
    s, te = logits(0), logits(1)
    got = losses.kd_kl(s.float(), te.float(), t).item()
    assert got == pytest.approx(ref_kd(s.numpy(), te.numpy(), t), rel=1e-5)
    reverse = ref_kd(te.numpy(), s.numpy(), t)  # KL(student || teacher): the wrong direction
    assert abs(got - reverse) > 1e-3
    if t != 1.0:  # the T^2 factor is there: the plain KL of the softened distributions is T^2 times smaller
        assert abs(got - ref_kd(s.numpy(), te.numpy(), t) / t**2) > 1e-3


@pytest.mark.parametrize("t", [1.0, 3.0])
def test_kd_kl_gradient_is_t_times_probability_gap(t):
    """d/ds [T^2 KL(p_t || p_s)] = T (p_s - p_t) / N: the student's log-probabilities are what is trained."""
    s = logits(2).float().requires_grad_(True)
    te = logits(3).float().requires_grad_(True)
    losses.kd_kl(s, te, t).backward()
    expected = t * (softmax(s.detach().double().numpy() / t) - softmax(te.detach().double().numpy() / t)) / len(s)
    np.testing.assert_allclose(s.grad.numpy(), expected, rtol=1e-4, atol=1e-6)
    assert te.grad is None  # the teacher gets no gradient even when it asks for one


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_born_again_loss(eps):
    s, te = logits(4).float(), logits(5).float()
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    alpha, t = 0.3, 2.0
    loss, logs = losses.born_again_loss(s, te, y, alpha, t, eps)
    expected = alpha * ref_ce(s.double().numpy(), y.numpy(), eps) + (1 - alpha) * ref_kd(s.double().numpy(), te.double().numpy(), t)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert logs["kd"].item() == pytest.approx(ref_kd(s.double().numpy(), te.double().numpy(), t), rel=1e-5)


def test_consistency_loss_and_detached_clean_view():
    clean = logits(6).float().requires_grad_(True)
    aug = logits(7).float().requires_grad_(True)
    y = torch.tensor([4, 3, 2, 1, 0, 0])
    lam, t = 0.7, 2.0
    loss, _ = losses.consistency_loss(clean, aug, y, lam, t)
    c, a = clean.detach().double().numpy(), aug.detach().double().numpy()
    assert loss.item() == pytest.approx(ref_ce(c, y.numpy()) + lam * ref_kd(a, c, t), rel=1e-5)
    loss.backward()
    onehot = np.eye(5)[y.numpy()]
    # the clean view's gradient is the CE gradient alone: the consistency term treats it as a fixed target
    np.testing.assert_allclose(clean.grad.numpy(), (softmax(c) - onehot) / len(c), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(aug.grad.numpy(), lam * t * (softmax(a / t) - softmax(c / t)) / len(a), rtol=1e-4, atol=1e-6)


def test_layerwise_loss_and_detached_final_exit():
    exits = [logits(10 + i).float().requires_grad_(True) for i in range(3)]
    y = torch.tensor([1, 1, 2, 3, 4, 0])
    shallow_feat = torch.randn(6, 8, requires_grad=True)
    deep_feat = torch.randn(6, 8, requires_grad=True)
    t, w, h = 3.0, 0.5, 0.2
    loss, logs = losses.layerwise_loss(exits, y, t, w, [(shallow_feat, deep_feat)], h)
    z = [e.detach().double().numpy() for e in exits]
    expected = (sum(ref_ce(zi, y.numpy()) for zi in z) + w * sum(ref_kd(zi, z[-1], t) for zi in z[:-1])
                + h * np.mean((shallow_feat.detach().numpy() - deep_feat.detach().numpy()) ** 2))
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    onehot = np.eye(5)[y.numpy()]
    # the final exit is trained by its CE only: the KL terms see it as a detached target
    np.testing.assert_allclose(exits[-1].grad.numpy(), (softmax(z[-1]) - onehot) / 6, rtol=1e-4, atol=1e-6)
    expected_shallow = (softmax(z[0]) - onehot) / 6 + w * t * (softmax(z[0] / t) - softmax(z[-1] / t)) / 6
    np.testing.assert_allclose(exits[0].grad.numpy(), expected_shallow, rtol=1e-4, atol=1e-6)
    assert deep_feat.grad is None and shallow_feat.grad is not None  # the hint pulls the shallow feature only


def test_kd_kl_is_zero_for_identical_predictions():
    z = logits(20).float()
    assert losses.kd_kl(z, z.clone(), 2.0).item() == pytest.approx(0.0, abs=1e-6)
