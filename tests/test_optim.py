"""One real training step: what moves, what does not, and which parameters get weight decay."""

import torch

from dinolite.optim import param_groups
from dinolite.train import Pretrainer, Schedule

from tests.helpers import tiny_config


def test_no_weight_decay_on_biases_and_norms(tmp_path):
    cfg = tiny_config(tmp_path)
    trainer = Pretrainer(cfg, progress=False)
    groups = param_groups(trainer.student_module)
    names = {id(p): n for n, p in trainer.student_module.named_parameters()}
    decayed = {names[id(p)] for p in groups[0]["params"]}
    plain = {names[id(p)] for p in groups[1]["params"]}
    assert all(not n.endswith(".bias") and "norm" not in n for n in decayed)
    assert any(n.endswith("norm.weight") for n in plain) and any(n.endswith(".bias") for n in plain)
    assert "backbone.blocks.0.attn.qkv.weight" in decayed
    trainer.train_step(*_batch(trainer), Schedule(lr=1e-3, wd=0.3, momentum=0.99, teacher_temp=0.04), freeze_steps=0)
    wd = {g["apply_wd"]: g["weight_decay"] for g in trainer.optimizer.param_groups}
    assert wd == {True: 0.3, False: 0.0}


def _batch(trainer):
    images, hw, _ = next(trainer.loader.epoch(0))
    return images, hw


def test_teacher_gets_no_gradient_and_moves_by_ema_only(tmp_path):
    trainer = Pretrainer(tiny_config(tmp_path), progress=False)
    teacher_before = [p.clone() for p in trainer.teacher.parameters()]
    sched = Schedule(lr=1e-2, wd=0.04, momentum=0.9, teacher_temp=0.04)
    trainer.train_step(*_batch(trainer), sched, freeze_steps=0)
    assert all(p.grad is None for p in trainer.teacher.parameters())
    for t0, t1, s in zip(teacher_before, trainer.teacher.parameters(), trainer.student_module.parameters()):
        assert torch.allclose(t1, 0.9 * t0 + 0.1 * s.detach(), atol=1e-6)
    moved = sum(not torch.equal(a, b) for a, b in zip(teacher_before, trainer.teacher.parameters()))
    assert moved > 0


def test_last_layer_frozen_during_first_epochs_then_trained(tmp_path):
    trainer = Pretrainer(tiny_config(tmp_path, **{"optim.freeze_last_layer": 1,
                                                  "model.norm_last_layer": False}), progress=False)
    last = trainer.student_module.head.last_layer
    before = [p.clone() for p in last.parameters()]
    mlp_before = trainer.student_module.head.mlp[0].weight.clone()
    sched = Schedule(lr=1e-2, wd=0.04, momentum=0.99, teacher_temp=0.04)
    freeze = trainer.plan.freeze_last_layer
    assert freeze == trainer.loader.steps_per_epoch  # 1 epoch, in steps
    trainer.train_step(*_batch(trainer), sched, freeze_steps=freeze)  # step 0: frozen
    assert all(torch.equal(a, b) for a, b in zip(before, last.parameters()))
    assert not torch.equal(mlp_before, trainer.student_module.head.mlp[0].weight)
    trainer.step = freeze  # the first step after the freeze
    trainer.train_step(*_batch(trainer), sched, freeze_steps=freeze)
    assert not all(torch.equal(a, b) for a, b in zip(before, last.parameters()))


def test_sgd_step_is_momentum_sgd_with_the_scheduled_lr_and_decay(tmp_path):
    """optim.optimizer=sgd (DINO's ResNet-50 command): p <- p - lr * buf, buf = 0.9 buf + grad + wd p (decayed group)."""
    cfg = tiny_config(tmp_path, **{"optim.optimizer": "sgd", "model.drop_path_rate": 0.0, "optim.clip_grad": 0})
    trainer = Pretrainer(cfg, progress=False)
    assert isinstance(trainer.optimizer, torch.optim.SGD)
    assert all(g["momentum"] == 0.9 for g in trainer.optimizer.param_groups)
    qkv = trainer.student_module.backbone.blocks[0].attn.qkv.weight
    before = qkv.detach().clone()
    grads = {}
    qkv.register_hook(lambda g: grads.setdefault("g", g.clone()))
    trainer.train_step(*_batch(trainer), Schedule(lr=0.5, wd=0.1, momentum=0.99, teacher_temp=0.04), freeze_steps=0)
    # first step: the momentum buffer is the gradient plus the decay term
    torch.testing.assert_close(qkv.detach(), before - 0.5 * (grads["g"] + 0.1 * before), rtol=1e-4, atol=1e-6)
