"""Linear probes: DINO's probe features, the batched learning-rate sweep, and the command."""

import json

import pytest
import torch

from dinolite.cli import main
from dinolite.eval.features import ProbeFeatures
from dinolite.eval.linear import split_holdout, train_sweep
from dinolite.weights import load_backbone


def test_probe_features_are_normed_cls_of_last_blocks(tiny_run):
    backbone = load_backbone(tiny_run)
    x = torch.randn(3, 1, 28, 28)
    one = ProbeFeatures(backbone, 1)(x)
    torch.testing.assert_close(one, backbone(x))  # the last block's normed CLS is the backbone output
    both = ProbeFeatures(backbone, 2, avgpool=True)
    feats = both(x)
    assert feats.shape == (3, both.dim) == (3, 3 * backbone.num_features)
    torch.testing.assert_close(feats[:, backbone.num_features:2 * backbone.num_features], one)
    assert not torch.allclose(feats[:, :backbone.num_features], one)


def clusters(n, g, dim=8, classes=3):
    centres = torch.randn(classes, dim, generator=g) * 3
    y = torch.randint(0, classes, (n,), generator=g)
    return centres[y] + torch.randn(n, dim, generator=g), y


def test_sweep_trains_each_lr_as_if_alone_and_picks_on_held_out():
    g = torch.Generator().manual_seed(0)
    x, y = clusters(600, g)
    xt, yt = clusters(200, torch.Generator().manual_seed(0))
    together = train_sweep(x, y, xt, yt, 3, lrs=(1e-6, 0.1), epochs=3, batch_size=64, progress=False)
    alone = train_sweep(x, y, xt, yt, 3, lrs=(0.1,), epochs=3, batch_size=64, progress=False)
    assert together.lrs[together.best] == 0.1 and together.holdout_top1[0] < together.holdout_top1[1]
    torch.testing.assert_close(together.classifier.weight, alone.classifier.weight, rtol=1e-5, atol=1e-6)
    assert together.test["top1"] > 95


def test_holdout_split_is_disjoint_and_seeded():
    fit, held = split_holdout(100, 0.1, seed=3)
    assert len(held) == 10 and len(set(fit.tolist()) | set(held.tolist())) == 100
    assert torch.equal(held, split_holdout(100, 0.1, seed=3)[1])


@pytest.mark.parametrize("mode", ["fast", "protocol"])
def test_linear_command_reports_and_saves_classifier(tiny_run, tmp_path, capsys, mode):
    out = tmp_path / f"clf_{mode}.safetensors"
    args = ["linear", str(tiny_run), "--mode", mode, "--epochs", "2", "--batch-size", "32", "--n-blocks", "2",
            "--avgpool", "--no-progress", "--cache-dir", str(tmp_path / "c"), "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"linear probe ({mode}, CLS of last 2 block(s) + avg patch)" in printed
    meta = json.loads(out.with_suffix(".json").read_text())
    assert 0 <= meta["test"]["top1"] <= meta["test"]["top5"] <= 100
    from safetensors.torch import load_file
    weights = load_file(str(out))
    assert weights["weight"].shape == (10, 3 * 32) and meta["feature_dim"] == 96
