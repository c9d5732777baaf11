"""Regression guard for the quickstart recipe: the shipped recipe must learn on real Fashion-MNIST.

The recipe runs at full length (4 epochs on the 60,000 training images, about 8 minutes on 2
cores); only the k-NN queries are cut to 2,000 test images. The teacher's k-NN must end clearly
above the same architecture at random initialisation. A change that breaks learning (a wrong sign,
a detached student, a teacher that never moves, a collapse) fails this test.

Why full length: shorter versions of this recipe (195 steps on a 10,000-image subset, with or
without the last-layer freeze) end *below* random init (60.95 % and 61.85 % vs 64.90 %), because
the first few hundred steps trade the random CLS token's pixel structure for a few coarse
clusters; the features pass random init only later (docs/quickstart-tuning.md).
"""

import json

from dinolite.cli import main

MARGIN = 3.0  # k-NN points above random init; the full run measured 5.6 (75.19 % vs 69.61 %)


def test_quickstart_recipe_learns(tmp_path, fmnist_root, capsys):
    run = tmp_path / "run"
    code = main(["pretrain", "--no-progress", f"train.output_dir={run}", "data.test_subset=2000",
                 "eval.knn_random_init=true"])
    assert code == 0, capsys.readouterr().err
    final = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert final["knn_top1"] >= final["knn_top1_random_init"] + MARGIN, final
