"""The pretraining loop: exact resume, divergence handling, and a real run through the CLI."""

import json

import pytest
import torch

from dinolite.cli import main
from dinolite.engine import checkpoint as ckpt
from dinolite.errors import TrainingDiverged
from dinolite.maths.loss import DINOLoss
from dinolite.pretraining.train import Pretrainer, pretrain
from tests.helpers import tiny_config, tiny_overrides


def losses(run_dir):
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in lines if "loss" in r]


def test_resume_is_exact(tmp_path, fmnist_root):
    # 2 epochs of 4 steps; the split run stops mid-epoch 1 (step 6) and resumes in a new trainer.
    straight, split = tmp_path / "straight", tmp_path / "split"
    pretrain(tiny_config(straight, **{"eval.knn_at_end": False}), progress=False)
    pretrain(tiny_config(split, **{"eval.knn_at_end": False, "train.stop_after_steps": 6}), progress=False)
    assert ckpt.list_checkpoints(split)[-1].name == "checkpoint-00000006.pt"
    pretrain(tiny_config(split, **{"eval.knn_at_end": False}), progress=False)
    assert losses(straight) == losses(split) and len(losses(straight)) == 8
    a, b = ckpt.latest_valid(straight)[1], ckpt.latest_valid(split)[1]
    assert a["step"] == b["step"] == 8
    for key in ("student", "teacher", "loss"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch, fmnist_root):
    real_forward = DINOLoss.forward
    calls = {"n": 0}

    def poisoned(self, s, t, temp):
        calls["n"] += 1
        loss = real_forward(self, s, t, temp)
        return loss * float("nan") if calls["n"] >= 6 else loss

    monkeypatch.setattr(DINOLoss, "forward", poisoned)
    cfg = tiny_config(tmp_path, **{"eval.knn_at_end": False})
    with pytest.raises(TrainingDiverged, match="checkpoint-00000004.pt"):
        Pretrainer(cfg, progress=False).fit()
    names = [p.name for p in ckpt.list_checkpoints(tmp_path)]
    assert names == ["checkpoint-00000004.pt"]  # the end of epoch 0; nothing written after the NaN
    state = ckpt.latest_valid(tmp_path)[1]
    assert all(torch.isfinite(v).all() for v in state["student"].values())


def test_cli_run_end_to_end(tmp_path, capsys, fmnist_root):
    run = tmp_path / "run"
    code = main(["pretrain", "--no-progress", *tiny_overrides(run, **{"eval.knn_random_init": True,
                                                                        "eval.knn_pixels": True})])
    out = capsys.readouterr().out
    assert code == 0
    final = [line for line in out.splitlines() if line.startswith("k-NN top-1")]
    assert len(final) == 1 and "(k=20, T=0.07) on the test split: teacher" in final[0]
    assert "same architecture at random init" in final[0] and "raw pixels" in final[0]
    assert "training 8 steps of 32 images (2.00 epochs of 128, 4 steps per epoch) on cpu x 1 in " in out
    assert ", from step 0" in out
    assert (run / "config.yaml").is_file() and (run / "teacher_backbone.safetensors").is_file()
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["checkpoint-00000004.pt", "checkpoint-00000008.pt"]
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    step_keys = {"loss", "lr", "wd", "momentum", "teacher_temp", "teacher_entropy", "kl_uniform", "images_per_s"}
    assert step_keys <= set(records[0])
    assert 0 <= records[-1]["knn_top1"] <= 100 and "knn_top1_random_init" in records[-1]
    assert 0 <= records[-1]["knn_top1_pixels"] <= 100
    # running the same command again resumes the finished run instead of starting over
    assert main(["pretrain", "--no-progress", *tiny_overrides(run, **{"eval.knn_at_end": False})]) == 0
    out = capsys.readouterr().out
    assert "resumed from" in out and f"resumed at step 8 from {run / 'checkpoint-00000008.pt'}" in out


def test_a_run_gives_back_the_callers_thread_count(tmp_path):
    before = torch.get_num_threads()
    other = 1 if before > 1 else 2
    pretrain(tiny_config(tmp_path / "run", **{"train.threads": other, "optim.epochs": 1, "eval.knn_at_end": False}),
             progress=False)
    assert torch.get_num_threads() == before
