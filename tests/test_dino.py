"""The DINO method's one step on real Fashion-MNIST batches: what moves, what does not, which parameters get
weight decay, and the loss terms it names."""

import pytest
import torch

from dinolite.data import build_loader, build_source
from dinolite.maths.optim import param_groups
from dinolite.methods.dino import DINOMethod, Schedule
from tests.helpers import tiny_config


def method_and_batch(tmp_path, **extra):
    cfg = tiny_config(tmp_path, **extra)
    source = build_source(cfg.data, "train")
    images, hw, _ = next(build_loader(source, cfg.optim.batch_size, cfg.train.seed).epoch(0))
    return DINOMethod(cfg, source.channels, "cpu"), images, hw


def step(method, images, hw, **sched):
    s = Schedule(**{"step": 0, "lr": 1e-3, "wd": 0.04, "momentum": 0.99, "teacher_temp": 0.04, **sched})
    return method.train_step(method.make_crops(images, hw, s.step), s)


def test_no_weight_decay_on_biases_and_norms(tmp_path):
    method, images, hw = method_and_batch(tmp_path)
    groups = param_groups(method.student_module)
    names = {id(p): n for n, p in method.student_module.named_parameters()}
    decayed = {names[id(p)] for p in groups[0]["params"]}
    plain = {names[id(p)] for p in groups[1]["params"]}
    assert all(not n.endswith(".bias") and "norm" not in n for n in decayed)
    assert any(n.endswith("norm.weight") for n in plain) and any(n.endswith(".bias") for n in plain)
    assert "backbone.blocks.0.attn.qkv.weight" in decayed
    step(method, images, hw, wd=0.3)
    wd = {g["apply_wd"]: g["weight_decay"] for g in method.optimizer.param_groups}
    assert wd == {True: 0.3, False: 0.0}


def test_teacher_gets_no_gradient_and_moves_by_ema_only(tmp_path):
    method, images, hw = method_and_batch(tmp_path)
    teacher_before = [p.clone() for p in method.teacher.parameters()]
    step(method, images, hw, lr=1e-2, momentum=0.9)
    assert all(p.grad is None for p in method.teacher.parameters())
    for t0, t1, s in zip(teacher_before, method.teacher.parameters(), method.student_module.parameters()):
        assert torch.allclose(t1, 0.9 * t0 + 0.1 * s.detach(), atol=1e-6)
    assert sum(not torch.equal(a, b) for a, b in zip(teacher_before, method.teacher.parameters())) > 0


def test_last_layer_frozen_while_the_schedule_says_so(tmp_path):
    method, images, hw = method_and_batch(tmp_path, **{"model.norm_last_layer": False})
    last = method.student_module.head.last_layer
    before = [p.clone() for p in last.parameters()]
    mlp_before = method.student_module.head.mlp[0].weight.clone()
    step(method, images, hw, lr=1e-2, freeze_last_layer=True)
    assert all(torch.equal(a, b) for a, b in zip(before, last.parameters()))
    assert not torch.equal(mlp_before, method.student_module.head.mlp[0].weight)
    step(method, images, hw, step=1, lr=1e-2)
    assert not all(torch.equal(a, b) for a, b in zip(before, last.parameters()))


def test_schedule_freezes_the_last_layer_for_the_plans_span(tmp_path):
    from dinolite.maths.schedules import Plan

    cfg = tiny_config(tmp_path, **{"optim.freeze_last_layer": 1})
    plan = Plan.of(cfg.optim, cfg.loss, steps_per_epoch=4)
    assert plan.freeze_last_layer == 4  # 1 epoch, in steps
    frozen = [Schedule.at(cfg, s, plan, cfg.optim.batch_size).freeze_last_layer for s in range(6)]
    assert frozen == [True] * 4 + [False] * 2


def test_sgd_step_is_momentum_sgd_with_the_scheduled_lr_and_decay(tmp_path):
    """optim.optimizer=sgd (DINO's ResNet-50 command): p <- p - lr * buf, buf = 0.9 buf + grad + wd p (decayed group)."""
    method, images, hw = method_and_batch(tmp_path, **{"optim.optimizer": "sgd", "model.drop_path_rate": 0.0,
                                                      "optim.clip_grad": 0})
    assert isinstance(method.optimizer, torch.optim.SGD)
    assert all(g["momentum"] == 0.9 for g in method.optimizer.param_groups)
    qkv = method.student_module.backbone.blocks[0].attn.qkv.weight
    before = qkv.detach().clone()
    grads = {}
    qkv.register_hook(lambda g: grads.setdefault("g", g.clone()))
    step(method, images, hw, lr=0.5, wd=0.1)
    # first step: the momentum buffer is the gradient plus the decay term
    torch.testing.assert_close(qkv.detach(), before - 0.5 * (grads["g"] + 0.1 * before), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(("options", "names"), [
    ({"loss.koleo_weight": 0, "loss.ibot_weight": 0}, {"loss_dino"}),
    ({"loss.koleo_weight": 0.1, "loss.ibot_weight": 0}, {"loss_dino", "loss_koleo"}),
    ({"loss.koleo_weight": 0.1, "loss.ibot_weight": 1.0}, {"loss_dino", "loss_koleo", "loss_ibot"}),
])
def test_the_step_names_each_term_and_weighs_them_into_the_loss(tmp_path, options, names):
    method, images, hw = method_and_batch(tmp_path, **options)
    loss, figures = step(method, images, hw)
    terms = {n: t for n, t in figures.items() if n.startswith("loss_")}
    assert set(terms) == names and not loss.requires_grad
    cfg = method.cfg.loss
    weights = {"loss_dino": 1.0, "loss_koleo": cfg.koleo_weight, "loss_ibot": cfg.ibot_weight}
    torch.testing.assert_close(loss, sum(weights[n] * t for n, t in terms.items()))
    # the teacher's collapse statistics come with every step, device tensors the engine averages over the log
    # interval (the monitor reads the interval, not its last batch); nothing is left for the log step itself
    stats = {n: v for n, v in figures.items() if n not in terms}
    assert set(stats) == {"teacher_entropy", "kl_uniform"} and all(torch.isfinite(v) for v in stats.values())
    assert all(not v.requires_grad for v in figures.values()) and method.log_figures() == {}


def test_a_trial_puts_every_weight_moment_and_center_back(tmp_path):
    method, images, hw = method_and_batch(tmp_path)
    step(method, images, hw)  # the optimizer has moments, the centers have moved
    before = {k: v.clone() for k, v in method.teacher.state_dict().items()}
    center = method.dino_loss.center.clone()
    moments = [s["exp_avg"].clone() for s in method.optimizer.state.values()]
    method.trial(lambda: float(step(method, images, hw, step=1)[0]))
    assert all(torch.equal(before[k], v) for k, v in method.teacher.state_dict().items())
    assert torch.equal(center, method.dino_loss.center)
    assert all(torch.equal(a, s["exp_avg"]) for a, s in zip(moments, method.optimizer.state.values(), strict=True))
