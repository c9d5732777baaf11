"""Regression guard for the quickstart recipe: a short run on real Fashion-MNIST must learn.

The quickstart recipe as shipped (model, augmentation, optimiser, DINO settings), cut to a
10,000-image subset and a few epochs so it runs in a couple of minutes; the teacher's k-NN must end
clearly above the same architecture at random initialisation. A change that breaks learning (a
wrong sign, a detached student, a teacher that never moves, a collapse) fails this test.
"""

import json

from dinolite.cli import main

MARGIN = 3.0  # k-NN points above random init; the calibration run measured more (see docs/quickstart-tuning.md)


def test_quickstart_recipe_learns_on_a_subset(tmp_path, fmnist_root, capsys):
    run = tmp_path / "run"
    code = main(["pretrain", "--no-progress", f"train.output_dir={run}", "data.subset=10000",
                 "data.test_subset=2000", "optim.epochs=5", "eval.knn_random_init=true"])
    assert code == 0, capsys.readouterr().err
    final = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    print(final)
    assert final["knn_top1"] >= final["knn_top1_random_init"] + MARGIN, final
