"""A long run over a folder of real images with broken files among them: it trains to the end, counts and
lists them; mostly broken data stop it with one line, also when the error comes from a loader worker."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from dinolite.cli import main
from dinolite.data.fashion_mnist import FashionMNIST
from tests.helpers import FMNIST, tiny_overrides


def real_folder(root, n_train: int, n_test: int):
    """Fashion-MNIST images written as PNG files, one folder per class (real data, folder layout)."""
    for split, n in (("train", n_train), ("test", n_test)):
        src = FashionMNIST(str(FMNIST), split, subset=n)
        for i in range(n):
            image, _, label = src[i]
            folder = root / split / src.classes[int(label)].replace("/", "-")
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[0].numpy()).save(folder / f"{i:05d}.png")
    return root


def break_files(root, count: int):
    """Replace ``count`` training images with broken files of mixed kinds; returns their paths."""
    files = sorted((root / "train").rglob("*.png"))[::7][:count]
    good = io.BytesIO()
    Image.new("L", (28, 28), 128).save(good, format="JPEG")
    kinds = [b"", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, good.getvalue()[:150], b"GIF89a garbage"]
    for i, f in enumerate(files):
        f.write_bytes(kinds[i % len(kinds)])
    return files


def folder_overrides(run, root, **extra):
    return tiny_overrides(run, **{"data.source": "folder", "data.root": str(root), "data.train_dir": "train",
                                  "data.val_dir": "test", "data.decode_size": 28, "data.subset": 0,
                                  "data.test_subset": 0, "augment.mean": "[0.286,0.286,0.286]",
                                  "augment.std": "[0.353,0.353,0.353]", **extra})


@pytest.mark.slow
def test_one_percent_broken_files_train_to_the_end_counted_and_listed(tmp_path, capsys):
    root = real_folder(tmp_path / "data", 400, 100)
    broken = break_files(root, 4)  # 1 %
    run = tmp_path / "run"
    assert main(["pretrain", "--no-progress", *folder_overrides(run, root, **{"data.num_workers": 2, "optim.epochs": 3,
                                                                              "eval.knn_at_end": True})]) == 0
    out = capsys.readouterr().out
    assert "finished at step 36/36" in out and "4 bad samples skipped (listed in" in out
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r for r in rows if "loss" in r][-1]["skipped_samples"] == 4
    listed = (run / "bad_samples.txt").read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in listed) == sorted(map(str, broken))
    assert all(np.isfinite(r["loss"]) for r in rows if "loss" in r)


def test_mostly_broken_data_stop_with_one_line(tmp_path, capsys):
    root = real_folder(tmp_path / "data", 400, 40)
    break_files(root, 57)  # every 7th file: about 14 %
    run = tmp_path / "run"
    code = main(["pretrain", "--no-progress", *folder_overrides(run, root, **{"data.num_workers": 1})])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "data.max_bad_fraction=0.1" in err[0] and "bad_samples.txt" in err[0]


def test_an_error_inside_a_loader_worker_is_the_same_one_line(tmp_path, capsys):
    root = real_folder(tmp_path / "data", 40, 10)
    for f in (root / "train").rglob("*.png"):
        f.write_bytes(b"")
    code = main(["pretrain", "--no-progress", *folder_overrides(tmp_path / "run", root,
                                                                **{"data.num_workers": 2, "optim.batch_size": 8})])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "can be decoded" in err[0] and "Traceback" not in err[0], err
