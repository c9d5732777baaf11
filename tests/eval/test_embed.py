"""``dinolite embed``: the rows are ``dinolite knn``'s features, the files read with numpy, torch and the csv
module alone, 2 processes write what 1 writes, and bad input or a failed write leaves nothing behind."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import dinolite
from dinolite.cli import main, parse
from dinolite.commands.common import features, setup
from tests.helpers import write_shards
from tests.test_distributed import free_port

FAST = ["num_workers=0"]  # every test reads in the main process (the idx files are in memory anyway)


def knn_features(target: Path, split: str, data: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The features and labels ``dinolite knn`` scores, through its own code (no cache)."""
    args = parse(["knn", str(target), "--no-cache", "--no-progress", "--data", *data])
    feats, labels, _ = features(setup(args), split)
    return feats, labels


def read_embedding(out: Path) -> tuple[torch.Tensor, list[dict], dict]:
    """The three files, read without dinolite: numpy + torch, the csv module, json."""
    array = np.load(out / "features.npy")
    assert array.dtype == np.float32 and array.ndim == 2
    with open(out / "index.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return torch.from_numpy(array), rows, json.loads((out / "embed.json").read_text())


def assert_rfc4180(path: Path) -> None:
    """A header line, CRLF after every record, fields quoted only where they must be and then with doubled quotes:
    RFC 4180, so spreadsheet tools and pandas.read_csv read it as well as the csv module."""
    raw = path.read_bytes().decode("utf-8")
    assert raw.startswith("index,path,label\r\n") and raw.endswith("\r\n")
    records = list(csv.reader(io.StringIO(raw, newline=""), strict=True))
    assert all(len(r) == 3 for r in records)
    out = io.StringIO(newline="")
    csv.writer(out, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL).writerows(records)
    assert out.getvalue() == raw  # exactly the RFC's minimal form, nothing else


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


def test_rows_equal_knn_features_on_fashion_mnist(tiny_run, tmp_path, capsys):
    train, test = tmp_path / "train", tmp_path / "test"
    assert main(["embed", str(tiny_run), "--out", str(train), "--no-progress", "--data", *FAST]) == 0
    assert "embedded 128 images of the train split, 32-dim features" in capsys.readouterr().out
    # the Python API, on the test split (96 images: a short last batch of the run's 64)
    assert dinolite.embed(tiny_run, FAST, test, split="test", progress=False) == test
    for split, out, n in (("train", train, 128), ("test", test, 96)):
        got, rows, info = read_embedding(out)
        ref, labels = knn_features(tiny_run, split, FAST)
        assert got.shape == ref.shape == (n, 32)
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)
        assert [r["index"] for r in rows] == [str(i) for i in range(n)]
        assert [r["path"] for r in rows] == [f"fashion_mnist:{split}:{i}" for i in range(n)]
        assert [int(r["label"]) for r in rows] == labels.tolist()
        assert_rfc4180(out / "index.csv")
        assert info["count"] == n and info["dim"] == 32 and info["split"] == split
        assert info["arch"] == "vit_tiny_patch16_224" and info["image_size"] == 28
        assert info["normalisation"] == {"mean": [0.286], "std": [0.353]}
        assert info["dinolite_version"] == dinolite.__version__
        assert sorted(p.name for p in out.iterdir()) == ["embed.json", "features.npy", "index.csv"]
    assert leftovers(tmp_path) == []


def official_checkpoint(path: Path) -> Path:
    """A 3-channel ViT in the official DINO release layout (width 128 = 2 heads of 64, patch 8)."""
    torch.manual_seed(0)
    vit = timm.create_model("vit_small_patch16_224", num_classes=0, img_size=32, patch_size=8, embed_dim=128,
                            depth=2, num_heads=2)
    torch.save(vit.state_dict(), path)
    return path


def image_folder(root: Path) -> Path:
    """root/train/<class>/: 13 RGB images of several sizes and aspect ratios, names that need CSV quoting,
    and one file that is not an image."""
    g = np.random.default_rng(0)
    for c, cls in enumerate(["boots", "coats, long"]):
        (root / "train" / cls).mkdir(parents=True)
        for i in range(6 + c):
            h, w = int(g.integers(20, 60)), int(g.integers(20, 60))
            name = f'img "{i}",{c}.png' if i == 2 else f"{i}.png"
            Image.fromarray(g.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "train" / cls / name)
    (root / "train" / "boots" / "3b.png").write_bytes(b"not an image")
    return root


def test_rows_equal_knn_features_on_an_image_folder_from_an_official_checkpoint(tmp_path):
    weights = official_checkpoint(tmp_path / "dino.pth")
    root = image_folder(tmp_path / "images")
    data = [str(root), *FAST, "decode_size=64", "eval.image_size=32", "eval.batch_size=5"]
    out = tmp_path / "emb"
    ref, labels = knn_features(weights, "train", data)  # knn leaves the bad file out...
    assert main(["embed", str(weights), "--out", str(out), "--no-progress", "--data", *data]) == 0
    got, rows, info = read_embedding(out)
    assert got.shape == ref.shape == (13, 128)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)
    files = sorted((root / "train" / "boots").iterdir()) + sorted((root / "train" / "coats, long").iterdir())
    bad = root / "train" / "boots" / "3b.png"
    assert [r["path"] for r in rows] == [str(f.absolute()) for f in files if f != bad]
    assert [int(r["label"]) for r in rows] == labels.tolist() and labels.tolist().count(1) == 7
    assert_rfc4180(out / "index.csv")
    assert '"' in (out / "index.csv").read_text()  # the quoted names really were quoted
    # ...and so does embed, which lists it
    assert info["unreadable"] == info["left_out"] == 1 and info["unreadable_list"] == "unreadable.txt"
    assert (out / "unreadable.txt").read_text().startswith(f"{bad.absolute()}\t")
    assert info["model"]["kind"] == "dino-official" and info["classes"] == ["boots", "coats, long"]


def test_the_same_command_again_computes_nothing_and_a_different_one_is_refused(tiny_run, tmp_path, capsys):
    out = tmp_path / "emb"
    args = ["embed", str(tiny_run), "--out", str(out), "--no-progress", "--data", *FAST, "subset=40"]
    assert main(args) == 0
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()}
    capsys.readouterr()
    assert main(args) == 0
    assert "already holds this embedding (40 x 32)" in capsys.readouterr().out
    assert main([*args, "--split", "test"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds a different embedding" in err and "split" in err
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()} == before
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("case", ["not a checkpoint", "missing data folder", "missing data root",
                                  "out holds other files", "out is a file"])
def test_bad_input_is_one_line_and_writes_nothing(tiny_run, tmp_path, capsys, case):
    weights, data, out = str(tiny_run), FAST, tmp_path / "emb"
    if case == "not a checkpoint":
        weights = str(tmp_path / "notes.pt")
        Path(weights).write_text("not a checkpoint")
    elif case == "missing data folder":
        data = [str(tmp_path / "no-such-folder")]
    elif case == "missing data root":
        data = [f"fashion_mnist:{tmp_path / 'nowhere'}"]
    elif case == "out holds other files":
        out.mkdir()
        (out / "mine.txt").write_text("keep me")
    else:
        out.write_text("keep me")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert main(["embed", weights, "--out", str(out), "--no-progress", "--data", *data]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("dinolite: error: "), err
    expected = {"not a checkpoint": "is not a dinolite or DINO checkpoint", "missing data folder": "no-such-folder",
                "missing data root": "Fashion-MNIST not found", "out holds other files": "holds other files (mine.txt)",
                "out is a file": "is a file"}[case]
    assert expected in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_a_failed_write_leaves_nothing(tiny_run, tmp_path, capsys, monkeypatch):
    from dinolite.eval import embed as embed_module

    calls = []

    def full_disk(self, feats, labels, names):
        calls.append(len(feats))
        if len(calls) == 2:  # the first batch is written, the second meets a full disk
            raise OSError(28, "No space left on device")
        real_add(self, feats, labels, names)

    real_add = embed_module.PartWriter.add
    monkeypatch.setattr(embed_module.PartWriter, "add", full_disk)
    out = tmp_path / "emb"
    assert main(["embed", str(tiny_run), "--out", str(out), "--no-progress", "--data", *FAST]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "No space left on device" in err
    assert calls == [64, 64] and not out.exists() and list(tmp_path.iterdir()) == []


def torchrun_embed(args: list[str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           "-m", "dinolite.cli", "embed", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["fashion_mnist", "shards"])
def test_two_processes_write_what_one_writes(tiny_run, tmp_path, fmnist_root, kind):
    """Fashion-MNIST: 100 images in batches of 16, split at a batch boundary (rank 0: 64, rank 1: 36).
    Shards: 100 images in shards of 30, 30, 30, 10, whole shards per rank, their count known from the manifest."""
    data = [*FAST, "eval.batch_size=16", "subset=100"]
    if kind == "shards":  # the run's subset and test_subset do not apply to shards
        write_shards(fmnist_root, tmp_path / "shards", n=100, max_count=30)
        data = [str(tmp_path / "shards"), *FAST, "eval.batch_size=16", "subset=0", "test_subset=0"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["embed", str(tiny_run), "--out", str(one), "--no-progress", "--data", *data]) == 0
    run = torchrun_embed([str(tiny_run), "--out", str(two), "--no-progress", "--data", *data])
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("embedded 100 images") == 1  # rank 0 alone reports
    (a, rows_a, info_a), (b, rows_b, info_b) = read_embedding(one), read_embedding(two)
    assert a.shape == b.shape == (100, 32)
    # the same rows; shards of a rank batch other images together than one process does, which may move an ulp
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    assert rows_a == rows_b and info_a == info_b
    names = [f"train_{i:08d}" if kind == "shards" else f"fashion_mnist:train:{i}" for i in range(100)]
    assert [r["path"] for r in rows_a] == names  # shards: the sample keys, in shard order
    torch.testing.assert_close(a, knn_features(tiny_run, "train", data)[0], rtol=0, atol=1e-6)
    assert leftovers(tmp_path) == []
