"""The library API (``DINOTrainer``) runs the command line's step: same recipe, same batches, same weights."""

from __future__ import annotations

import math

import pytest
import torch

from dinolite.cli import main
from dinolite.data import build_loader, build_source
from dinolite.engine import checkpoint as ckpt
from dinolite.pretraining.library import DINOTrainer
from tests.helpers import tiny_config, tiny_overrides

# The quickstart's objective (KoLeo + Sinkhorn-Knopp + iBOT) on a tiny ViT with drop path on, so every
# random stream of the step (augmentation, masks, drop path) takes part; 6 steps cross an epoch boundary.
STEPS = 6
EXTRA = {"optim.total_steps": STEPS, "optim.epochs": 1, "train.log_every": 2, "eval.knn_at_end": False,
         "train.checkpoint_every_minutes": 100}


def test_library_api_gives_the_command_lines_weights(tmp_path, fmnist_root, capsys):
    run = tmp_path / "cli"
    overrides = tiny_overrides(run, **EXTRA)
    cfg = tiny_config(run, **EXTRA)
    assert cfg.loss.koleo_weight > 0 and cfg.loss.ibot_weight > 0 and cfg.loss.centering == "sinkhorn_knopp"
    assert main(["pretrain", *overrides, "--no-progress"]) == 0
    path, saved = ckpt.latest_valid(run)
    assert path is not None and saved is not None and saved["step"] == STEPS

    trainer = DINOTrainer("quickstart", tiny_overrides(tmp_path / "lib", **EXTRA), in_chans=1, device="cpu")
    loader = build_loader(build_source(trainer.cfg.data, "train"), trainer.cfg.optim.batch_size, trainer.cfg.train.seed)
    assert loader.steps_per_epoch < STEPS  # the second epoch is reshuffled as the command line reshuffles it
    history = trainer.fit(loader)
    assert [h["step"] for h in history] == list(range(1, STEPS + 1))
    assert all(math.isfinite(h[k]) for h in history for k in ("loss", "loss_dino", "loss_koleo", "loss_ibot"))
    state = trainer.method.state()
    for part in ("student", "teacher", "loss", "ibot_loss"):
        assert saved[part].keys() == state[part].keys()
        unequal = [k for k in state[part] if not torch.equal(saved[part][k], state[part][k])]
        assert not unequal, f"{part}: {unequal[:5]}"
    # the optimizer's moments too
    moments = [(a["exp_avg"], b["exp_avg"]) for a, b in zip(saved["optimizer"]["state"].values(),
                                                           state["optimizer"]["state"].values(), strict=True)]
    assert moments and all(torch.equal(a, b) for a, b in moments)


def test_trainer_takes_plain_batches_and_runs_its_hooks():
    trainer = DINOTrainer("quickstart", ["model.embed_dim=32", "model.depth=1", "model.num_heads=2",
                                         "model.out_dim=40", "model.hidden_dim=32", "model.bottleneck_dim=8",
                                         "augment.global_crops_size=16", "augment.local_crops_number=2",
                                         "augment.local_crops_size=8", "model.patch_size=4", "optim.batch_size=4",
                                         "optim.warmup_fraction=null", "optim.warmup_steps=2",
                                         "optim.freeze_last_layer_fraction=null", "optim.freeze_last_layer_steps=3"],
                          in_chans=1, device="cpu")
    teacher_before = [p.clone() for p in trainer.teacher.parameters()]
    last_layer = trainer.student.head.last_layer.parametrizations.weight.original1.clone()
    data = [(torch.randint(0, 256, (4, 1, 20, 20), dtype=torch.uint8), torch.zeros(4)) for _ in range(3)]
    steps, epochs, losses = [], [], []
    history = trainer.fit(data, epochs=2, after_step=lambda t, f: (steps.append(f["step"]), losses.append(f["loss"])),
                          after_epoch=lambda t, e: epochs.append(e))
    assert steps == [1, 2, 3, 4, 5, 6] and epochs == [{"epoch": 1, "steps": 3}, {"epoch": 2, "steps": 6}]
    assert all(isinstance(x, torch.Tensor) for x in losses)  # the hook gets device tensors: no sync per step
    assert [h["loss"] for h in history] == [float(x) for x in losses]  # floats at the end, read once
    peak = 2e-3 * 4 / 256  # the quickstart's optim.lr, scaled by the batch as on the command line
    assert history[0]["lr"] == 0.0 and history[2]["lr"] == pytest.approx(peak)
    assert history[-1]["momentum"] > history[0]["momentum"]
    assert any(not torch.equal(a, b) for a, b in zip(teacher_before, trainer.teacher.parameters()))
    assert not torch.equal(trainer.student.head.last_layer.parametrizations.weight.original1, last_layer)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        trainer.fit(iter(data))
    with pytest.raises(ValueError, match="no batch"):
        trainer.fit([], epochs=10, steps_per_epoch=1)  # 10 steps planned, 6 done, none given


@pytest.mark.parametrize("model", [
    ["model.reg_tokens=2"],  # a ViT with registers, iBOT on
    ["model.arch=resnet10t", "model.patch_size=null", "model.embed_dim=null", "model.depth=null",
     "model.num_heads=null", "loss.ibot_weight=0"],  # a timm CNN
], ids=["registers", "cnn"])
def test_trainer_takes_the_command_lines_backbones(tmp_path, model):
    trainer = DINOTrainer("quickstart", tiny_overrides(tmp_path, **{"optim.total_steps": 2}) + model,
                          in_chans=1, device="cpu")
    source = build_source(trainer.cfg.data, "train")
    before = [p.clone() for p in trainer.teacher.parameters()]
    history = trainer.fit(build_loader(source, trainer.cfg.optim.batch_size, trainer.cfg.train.seed))
    assert len(history) == 2 and all(math.isfinite(h["loss"]) for h in history)
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.teacher.parameters()))
