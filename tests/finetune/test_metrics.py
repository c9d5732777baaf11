"""Ensembles and early exit from per-exit predictions, against a per-sample reference loop."""

import numpy as np
import pytest
import torch

from dinolite.finetune.metrics import accuracy, early_exit, early_exit_figures, ensemble_probs


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def make_exits(n=200, c=4, e=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, c, (n,), generator=g)
    outs = []
    for i in range(e):  # deeper exits are sharper and more often right
        z = torch.randn(n, c, generator=g) * (1 + i)
        z[torch.arange(n), labels] += 1.0 + i
        outs.append(z)
    return outs, labels


def test_ensemble_averages_probabilities():
    outs, labels = make_exits()
    probs = [softmax(z.double().numpy()) for z in outs]
    ref = np.mean(probs, axis=0)
    np.testing.assert_allclose(ensemble_probs(outs).numpy(), ref, rtol=1e-5, atol=1e-7)
    assert accuracy(ensemble_probs(outs), labels) == pytest.approx(np.mean(ref.argmax(1) == labels.numpy()) * 100)


@pytest.mark.parametrize("threshold", [0.5, 0.8, 0.95, 1.0])
def test_early_exit_takes_the_first_confident_exit(threshold):
    outs, labels = make_exits()
    depths = [1, 2, 4]
    probs = [softmax(z.double().numpy()) for z in outs]
    preds, used = [], []
    for i in range(len(labels)):
        for k, p in enumerate(probs):
            if p[i].max() >= threshold or k == len(probs) - 1:
                preds.append(p[i].argmax())
                used.append(depths[k])
                break
    pred, depth = early_exit(outs, depths, threshold)
    assert pred.tolist() == preds and depth.tolist() == used
    fig = early_exit_figures(outs, labels, depths, threshold)
    assert fig["top1"] == pytest.approx(np.mean(np.array(preds) == labels.numpy()) * 100)
    assert fig["avg_depth"] == pytest.approx(np.mean(used)) and fig["depth_fraction"] == pytest.approx(np.mean(used) / 4)


def test_threshold_trades_depth_for_accuracy():
    outs, labels = make_exits(n=2000)
    low = early_exit_figures(outs, labels, [1, 2, 3], 0.3)
    high = early_exit_figures(outs, labels, [1, 2, 3], 0.999)
    assert low["avg_depth"] < high["avg_depth"]
    assert high["top1"] == pytest.approx(accuracy(outs[-1], labels), abs=2.0)
