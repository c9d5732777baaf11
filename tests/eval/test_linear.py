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


def shard_run(tiny_run, tmp_path, fmnist_root, train_dir):
    """A copy of the tiny run whose config.yaml says its data are webdataset shards (test split: 64 images)."""
    import shutil

    from omegaconf import OmegaConf

    from tests.helpers import write_shards

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("features"))
    write_shards(fmnist_root, tmp_path / "test", 64, 32, split="test")
    cfg = OmegaConf.load(run / "config.yaml")
    cfg.data.update(source="shards", root=str(train_dir), eval_shards=str(tmp_path / "test"), subset=0,
                    test_subset=0, num_workers=2, shuffle_buffer=32)
    OmegaConf.save(cfg, run / "config.yaml")
    return run


def test_protocol_probe_streams_a_run_on_shards(tiny_run, tmp_path, capsys, fmnist_root):
    """Found by hand: --mode protocol indexed the training source, an AttributeError on shards."""
    from tests.helpers import write_shards

    write_shards(fmnist_root, tmp_path / "train", 160, 64)  # shards of 64, 64, 32: 5 steps of 32 per epoch
    run = shard_run(tiny_run, tmp_path, fmnist_root, tmp_path / "train")
    args = ["linear", str(run), "--mode", "protocol", "--epochs", "2", "--batch-size", "32", "--n-blocks", "1",
            "--no-progress", "--no-cache"]
    assert main(args) == 0
    assert "linear probe (protocol, CLS of last 1 block(s))" in capsys.readouterr().out
    meta = json.loads((run / "linear_protocol.json").read_text())
    assert 0 <= meta["test"]["top1"] <= meta["test"]["top5"] <= 100
    from safetensors.torch import load_file
    first = load_file(str(run / "linear_protocol.safetensors"))["weight"]
    assert first.shape == (10, 32)  # the manifest's 10 classes, the tiny ViT's width
    # the same probe again: the loader's seeded order makes it the same classifier
    assert main(args + ["--out", str(tmp_path / "again.safetensors")]) == 0
    torch.testing.assert_close(load_file(str(tmp_path / "again.safetensors"))["weight"], first)


def test_protocol_probe_refuses_unlabelled_shards_in_one_line(tiny_run, tmp_path, capsys, fmnist_root):
    from tests.helpers import write_unlabelled_shard

    run = shard_run(tiny_run, tmp_path, fmnist_root, write_unlabelled_shard(tmp_path / "train", 32, []))
    assert main(["linear", str(run), "--epochs", "1", "--batch-size", "16", "--no-progress", "--no-cache"]) == 2
    err = capsys.readouterr().err.strip()
    assert "carry no label: the linear probe needs labelled data" in err and len(err.splitlines()) == 1
