"""benchmarks/learning.py without training: the digits dataset it adds, the commands it runs, and how it reads
a run back (run_record.py). The benchmark itself trains for an hour; it is run by hand."""

import importlib.util
import json
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load(name: str):
    sys.path.insert(0, str(BENCHMARKS))  # the scripts import their neighbours
    try:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_digits_folder_is_a_fixed_stratified_split(tmp_path):
    data = load("learning_data")
    root = data.digits_folder(tmp_path / "digits")
    stats = data.folder_stats(root)
    assert (stats["train"], stats["test"]) == (1297, 500)
    per_class = {split: {d.name: len(list(d.glob("*.png"))) for d in (root / split).iterdir()}
                 for split in ("train", "test")}
    assert sorted(per_class["test"]) == [str(c) for c in range(10)]
    assert sum(per_class["train"].values()) == 1297 and sum(per_class["test"].values()) == 500
    _, labels = data.load_digits()
    share = np.bincount(labels) / len(labels)
    assert all(abs(per_class["test"][str(c)] - 500 * share[c]) <= 1 for c in range(10))  # stratified
    train, test = data.digits_split(labels)
    assert np.array_equal(train, data.digits_split(labels)[0]) and not set(train) & set(test)  # fixed, disjoint
    images, _ = data.load_digits()
    assert images.shape == (1797, 28, 28) and images.dtype == np.uint8 and images.max() == 255
    assert 0.2 < stats["mean"] < 0.4 and 0.2 < stats["std"] < 0.5
    bench = load("learning")
    overrides = bench.datasets(tmp_path, ["digits"])["digits"]  # the folder is written once: reused here
    assert f"augment.mean=[{stats['mean']},{stats['mean']},{stats['mean']}]" in overrides


def test_the_runs_use_the_budget_or_a_fixed_length(tmp_path):
    bench = load("learning")
    data = bench.datasets(tmp_path, ["fashion-mnist-5k"])["fashion-mnist-5k"]
    assert "data.subset=5000" in data
    args = Namespace(images=0, budget_minutes=10.0, batch=256, threads=0, set=["train.threads=1"])
    cmd = bench.run_command("fashion-mnist-5k", data, args, tmp_path)
    assert "train.budget_minutes=10" in cmd and not any(c.startswith("optim.total_steps") for c in cmd)
    assert cmd[-1] == "train.threads=1" and not any(c.startswith("optim.batch_size") for c in cmd)
    fixed = bench.run_command("fashion-mnist-5k", data, Namespace(**{**vars(args), "images": 2560}), tmp_path)
    assert {"train.budget_minutes=0", "optim.total_steps=10", "optim.batch_size=256"} <= set(fixed)


README_LINES = [
    "time budget 10 min: 0.80 s/step measured here (322 images/s), 594 steps planned (2.54 epochs)",
    "training 594 steps of 256 images (2.54 epochs of 60000, 234 steps per epoch) on cpu x 1 in runs/qs-all, "
    "from step 0; baselines: knn_top1_random_init 69.61 %, knn_top1_pixels 85.69 %",
    "k-NN top-1 (k=20, T=0.07) on the test split: teacher 81.01 %, same architecture at random init 69.61 %, "
    "raw pixels 85.69 %",
    "finished at step 594/594 in 592 s; run directory runs/qs-all",
]


def test_a_run_is_read_back(tmp_path):
    record = load("run_record")
    printed = record.parse_output(README_LINES)
    assert (printed["planned_steps"], printed["planned_s_per_step"], printed["planned_epochs"]) == (594, 0.8, 2.54)
    assert (printed["teacher_knn"], printed["random_init_knn"], printed["pixels_knn"]) == (81.01, 69.61, 85.69)
    assert printed["steps_per_epoch"] == 234 and printed["finished"]["seconds"] == 592
    (tmp_path / "config.yaml").write_text("optim:\n  batch_size: 256\n  total_steps: 40\ntrain:\n  budget_minutes: 1\n"
                                          "  threads: 1\nmodel:\n  out_dim: 1024\n")
    rows = [{"step": 20, "loss": 9.0, "images_per_s": 256.0, "teacher_entropy": 5.0, "kl_uniform": 1.0},
            {"step": 25, "replan": {"total_steps": 40, "reason": "behind"}},
            {"step": 40, "loss": 8.0, "images_per_s": 512.0, "teacher_entropy": 4.0, "kl_uniform": 2.0,
             "knn_online": 70.04, "warnings": ["not learning: ..."]},
            {"step": 40, "knn_top1": 75.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "baselines.json").write_text(json.dumps({"values": {"knn_top1_random_init": 70.0,
                                                                    "knn_top1_pixels": 80.0}}))
    s = record.summarize(tmp_path)
    assert s["train_s"] == 30.0 and s["steps_per_s"] == round(40 / 30, 3) and s["steps_done"] == 40
    assert (s["gap_to_pixels"], s["teacher_minus_random"]) == (-5.0, 5.0)
    assert s["replans"] == [rows[1]] and s["warnings"] == ["not learning: ..."] and s["online_knn"] == [(40, 70.04)]
