"""The online k-NN is `dinolite knn` on a fixed subset; the raw-pixel baseline is `dinolite knn --baseline pixels`."""

from __future__ import annotations

import json

import pytest
import torch

from dinolite.cli import main
from dinolite.config import read_saved_config
from dinolite.data import build_source
from dinolite.eval.features import RawPixels, extract_features
from dinolite.eval.knn import knn_accuracy
from dinolite.eval.online import OnlineKNN, spread_indices
from dinolite.maths.augment import EvalTransform
from dinolite.weights import load_backbone


def test_spread_indices_cover_the_whole_range():
    assert spread_indices(10, 0) == list(range(10)) and spread_indices(10, 20) == list(range(10))
    idx = spread_indices(8000, 5000)
    assert len(idx) == len(set(idx)) == 5000 and idx[0] == 0 and idx[-1] >= 7990
    # a folder sorted by class (800 per class): every class is in the subset, in equal shares
    per_class = torch.bincount(torch.tensor(spread_indices(8000, 1000)) // 800)
    assert per_class.tolist() == [100] * 10


def _run_parts(run):
    cfg = read_saved_config(run / "config.yaml")
    e = cfg.eval
    transform = EvalTransform(e.image_size, e.crop_ratio, cfg.augment.mean, cfg.augment.std)
    return cfg, transform, build_source(cfg.data, "train"), build_source(cfg.data, "test")


def test_online_knn_equals_the_knn_command_on_the_same_subset(tiny_run, tmp_path):
    cfg, transform, train, test = _run_parts(tiny_run)
    online = OnlineKNN(train, test, transform, torch.device("cpu"), n_bank=50, n_queries=40, k=20, temperature=0.07)
    got = online(load_backbone(tiny_run))
    out = tmp_path / "knn.json"
    assert main(["knn", str(tiny_run), "--no-progress", "--no-cache", "--k", "20", "--bank-subset", "50",
                 "--query-subset", "40", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert (figures["bank"], figures["queries"]) == (50, 40)
    assert got == pytest.approx(figures["knn"]["20"]["top1"], abs=1e-9)


def test_pixel_baseline_is_knn_on_the_flattened_view(tiny_run, tmp_path, capsys):
    cfg, transform, train, test = _run_parts(tiny_run)
    mean, std = cfg.augment.mean[0], cfg.augment.std[0]
    bank, bank_y = train.images.float().div(255).sub(mean).div(std).flatten(1), train.labels
    queries, y = test.images.float().div(255).sub(mean).div(std).flatten(1), test.labels
    expected = knn_accuracy(queries, y, bank, bank_y, 10, 20, 0.07)["top1"]  # a 28 px crop of 28 px images is the image
    feats, _ = extract_features(RawPixels(), test, transform, torch.device("cpu"), progress=False)
    torch.testing.assert_close(feats, queries, rtol=1e-5, atol=1e-5)
    out = tmp_path / "pixels.json"
    assert main(["knn", str(tiny_run), "--baseline", "pixels", "--no-progress", "--k", "20", "--json", str(out)]) == 0
    assert "raw pixels" in capsys.readouterr().out
    assert json.loads(out.read_text())["knn"]["20"]["top1"] == pytest.approx(expected, abs=1e-9)
