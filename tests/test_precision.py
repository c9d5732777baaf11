"""train.precision: the rule per device, the timing choice on a CPU, and a resume that keeps it."""

import json

import pytest
import torch

from dinolite.config import load_config
from dinolite.engine import checkpoint as ckpt
from dinolite.errors import UserError
from dinolite.maths import precision
from dinolite.pretraining.train import Pretrainer, pretrain
from tests.helpers import tiny_config, tiny_overrides

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_rule_per_device(monkeypatch):
    monkeypatch.setattr(precision, "cpu_bf16_native", lambda: True)
    assert precision.resolve("auto", CPU) == "fp32" and precision.resolve("auto", CUDA) == "bf16"
    assert precision.resolve("fastest", CPU) is None  # a timing decides
    assert precision.resolve("fastest", CUDA) == "bf16"
    assert precision.resolve("bf16", CPU) == "bf16" and precision.resolve("fp32", CUDA) == "fp32"
    monkeypatch.setattr(precision, "cpu_bf16_native", lambda: False)
    assert precision.resolve("fastest", CPU) == "fp32"  # no native bf16: not even timed


def test_bf16_kept_only_when_clearly_faster():
    assert precision.faster({"fp32": 1.0, "bf16": 0.8}) == "bf16"
    assert precision.faster({"fp32": 1.0, "bf16": 0.99}) == "fp32"  # within the margin: float32's exactness
    assert precision.faster({"fp32": 0.5, "bf16": 0.6}) == "fp32"


def test_unknown_setting_is_one_line():
    with pytest.raises(UserError, match="train.precision must be auto, fastest, fp32 or bf16"):
        load_config("quickstart", ["train.precision=half"])


def test_bf16_step_runs_in_bf16(tmp_path, fmnist_root):
    """The forward passes of a bf16 step really run in bf16 (the same batch gives another loss)."""
    losses = {}
    for name in ("fp32", "bf16"):
        tr = Pretrainer(tiny_config(tmp_path / name, **{"train.precision": name, "eval.knn_at_end": False}),
                        progress=False)
        images, hw, _ = next(iter(tr.loader.epoch(0)))
        m = tr.method
        assert m.precision == name
        loss, _ = m.train_step(m.make_crops(images, hw, 0), m.schedule(0, tr.plan))
        losses[name] = float(loss)
    assert losses["fp32"] != losses["bf16"] and abs(losses["fp32"] - losses["bf16"]) < 0.05 * losses["fp32"]


def test_fastest_times_both_and_a_resume_keeps_the_choice(tmp_path, monkeypatch, fmnist_root):
    monkeypatch.setattr(precision, "cpu_bf16_native", lambda: True)  # the timing runs on any CPU
    run = tmp_path / "run"
    extra = {"train.precision": "fastest", "eval.knn_at_end": False}
    pretrain(tiny_config(run, **extra, **{"train.stop_after_steps": 3}), progress=False)
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    chosen = [r for r in records if "precision" in r]
    assert len(chosen) == 1 and set(chosen[0]["precision_s_per_step"]) == {"fp32", "bf16"}
    seconds = chosen[0]["precision_s_per_step"]
    assert chosen[0]["precision"] == precision.faster(seconds)
    assert ckpt.latest_valid(run)[1]["precision"] == chosen[0]["precision"]
    # the resumed run does not time again and computes as the run began, whatever a new timing would say
    other = "fp32" if chosen[0]["precision"] == "bf16" else "bf16"
    monkeypatch.setattr(precision, "faster", lambda s: other)
    tr = Pretrainer(tiny_config(run, **extra), progress=False)
    assert tr.step == 3 and tr.time_and_plan(0.0, {}) == [] and tr.method.precision == chosen[0]["precision"]


def test_cli_prints_the_choice(tmp_path, monkeypatch, capsys, fmnist_root):
    from dinolite.cli import main

    monkeypatch.setattr(precision, "cpu_bf16_native", lambda: True)
    assert main(["pretrain", "--no-progress", *tiny_overrides(tmp_path / "r", **{
        "train.precision": "fastest", "eval.knn_at_end": False, "train.stop_after_steps": 1})]) == 0
    out = capsys.readouterr().out
    assert "precision " in out and "s/step in float32" in out and "in bf16 autocast" in out


def test_fastest_keeps_float32_for_a_cnn_on_a_cpu(tmp_path, monkeypatch, fmnist_root):
    """oneDNN's bf16 convolution backward returned NaN weight gradients here (maths/precision.py): a CNN is not
    timed in bf16 on a CPU; a ViT still is, and a CNN's explicit bf16 is still honoured."""
    monkeypatch.setattr(precision, "cpu_bf16_native", lambda: True)
    assert precision.resolve("fastest", CPU, convolutional=True) == "fp32"
    assert precision.resolve("fastest", CUDA, convolutional=True) == "bf16"
    assert precision.resolve("bf16", CPU, convolutional=True) == "bf16"
    cnn = {"model.arch": "resnet10t", "model.patch_size": "null", "model.embed_dim": "null", "model.depth": "null",
           "model.num_heads": "null", "loss.ibot_weight": 0.0}
    for extra, convolutional in (({}, False), (cnn, True)):
        tr = Pretrainer(tiny_config(tmp_path / str(convolutional), **{"train.precision": "fastest", **extra}),
                        progress=False)
        assert tr.method.convolutional is convolutional
        timed = precision.choose_by_timing(tr.method, "fastest", CPU, lambda: 1.0)
        assert timed is None if convolutional else timed == {"fp32": 1.0, "bf16": 1.0}
        assert tr.method.precision == "fp32"  # the CNN's by the rule, the ViT's by the tie


def test_a_timing_with_non_finite_steps_is_never_kept(tmp_path, fmnist_root):
    """A precision whose timed steps end non-finite is infinitely slow: the other is kept, the banner says why,
    the metrics line holds no Infinity, and a budget timed so is refused in one line."""
    import math

    assert precision.faster({"fp32": 1.0, "bf16": math.inf}) == "fp32"
    line = precision.chosen_line({"fp32": 0.3, "bf16": math.inf}, "fp32")
    assert line == ("precision fp32 (train.precision=fastest: 0.30 s/step in float32, a non-finite loss or "
                    "gradient in bf16 autocast on this CPU)")
    tr = Pretrainer(tiny_config(tmp_path / "r", **{"train.precision": "fp32"}), progress=False)
    seconds = tr.method.seconds_per_step(tr.loader, tr.run_plan.plan, 0, warmup=1, timed=1)
    assert math.isfinite(seconds) and seconds > 0
    tr.method.optimizer.param_groups[0]["params"][0].data[0] = float("nan")  # a weight a NaN gradient reached
    assert tr.method.seconds_per_step(tr.loader, tr.run_plan.plan, 0, warmup=1, timed=1) == math.inf
    tr.time_steps = lambda: math.inf
    with pytest.raises(UserError, match="non-finite loss or gradient in fp32.*train.precision=fp32"):
        tr.plan_budget(0.0, 0.0)


def test_nan_advice_names_float32_under_cpu_bf16(tmp_path):
    tr = Pretrainer(tiny_config(tmp_path / "r", **{"train.precision": "bf16"}), progress=False)
    assert tr.nan_advice.startswith("it ran in bf16 autocast on a CPU: resume with train.precision=fp32, or lower")
    tr.method.precision = "fp32"
    assert tr.nan_advice == "lower optim.lr or raise loss.warmup_teacher_temp_epochs and resume"
