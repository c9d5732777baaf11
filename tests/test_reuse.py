"""model.init from a backbone alone: the architecture comes from the file, the heads learn on the frozen backbone
first, then the backbone learns slower (layer-wise decay) with the teacher copied from the student; the command
line and DINOTrainer give the same weights, and a continued run killed with -9 resumes to the same end."""

from __future__ import annotations

import signal
import time

import pytest
import torch

from dinolite.cli import main
from dinolite.data import build_loader, build_source
from dinolite.engine import checkpoint as ckpt
from dinolite.maths.optim import build_optimizer
from dinolite.pretraining.library import DINOTrainer
from tests.forked import Forked
from tests.helpers import tiny_overrides
from tests.layouts.sources import dinov2_official, hf_folder, tiny_vit

STEPS = 6
EXTRA = {"optim.total_steps": STEPS, "optim.epochs": 1, "train.log_every": 2, "eval.knn_at_end": False,
         "train.checkpoint_every_minutes": 100, "model.init_head_warmup": 0.34}  # 2 steps frozen, unfreeze at 2


def test_the_heads_learn_on_the_frozen_backbone_then_the_teacher_copies_the_student(tmp_path, fmnist_root):
    source = tmp_path / "dinov2.pth"
    dinov2_official(source, registers=True)
    trainer = DINOTrainer("quickstart", tiny_overrides(tmp_path / "lib", **EXTRA, **{"model.init": str(source)}),
                          in_chans=1, device="cpu")
    m = trainer.cfg.model  # the architecture from the file, the recipe's width and depth replaced
    assert (m.patch_size, m.embed_dim, m.depth, m.num_heads, m.reg_tokens, m.no_embed_class) == (14, 64, 2, 1, 4, True)
    assert (m.init_backbone_lr, m.init_layer_decay) == (0.2, 0.75)
    start = {k: v.clone() for k, v in trainer.student.state_dict().items()}
    seen: dict[int, dict] = {}

    def keep(tr, figures):
        seen[figures["step"]] = {"student": {k: v.clone() for k, v in tr.student.state_dict().items()},
                                 "teacher": {k: v.clone() for k, v in tr.teacher.state_dict().items()},
                                 "momentum": figures["momentum"]}

    loader = build_loader(build_source(trainer.cfg.data, "train"), trainer.cfg.optim.batch_size, trainer.cfg.train.seed)
    trainer.fit(loader, after_step=keep)
    frozen = seen[2]["student"]
    backbone = [k for k in start if k.startswith("backbone.")]
    assert all(torch.equal(frozen[k], start[k]) for k in backbone)  # two steps: the backbone did not move
    assert not torch.equal(frozen["head.mlp.0.weight"], start["head.mlp.0.weight"])  # the heads did
    after = seen[3]
    qkv = "backbone.blocks.1.attn.qkv.weight"
    assert not torch.equal(after["student"][qkv], start[qkv])
    # the unfreeze step: teacher <- student (with the heads the warm-up trained), then the usual EMA
    mom = after["momentum"]
    for k in ("head.mlp.0.weight", "backbone.blocks.0.mlp.fc1.weight"):
        want = mom * frozen[k] + (1 - mom) * after["student"][k]
        torch.testing.assert_close(after["teacher"][k], want, rtol=0, atol=1e-6)


def test_the_backbone_learns_slower_layer_by_layer():
    from dinolite.maths.models import build_student_teacher

    student, _ = build_student_teacher(arch="vit_tiny_patch16_224", patch_size=7, embed_dim=32, depth=2, num_heads=2,
                                       out_dim=16, hidden_dim=16, bottleneck_dim=8, in_chans=1, img_size=28)
    opt = build_optimizer(student, torch.device("cpu"), "adamw", 0.2, 0.5)
    scale = {id(p): g["lr_scale"] for g in opt.param_groups for p in g["params"]}
    named = dict(student.named_parameters())
    expect = {"head.mlp.0.weight": 1.0, "backbone.norm.weight": 0.2, "backbone.blocks.1.attn.qkv.weight": 0.1,
              "backbone.blocks.0.attn.qkv.weight": 0.05, "backbone.patch_embed.proj.weight": 0.025,
              "backbone.cls_token": 0.025}
    assert {k: scale[id(named[k])] for k in expect} == pytest.approx(expect)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(named) - 1  # all but the frozen weight-norm gain


def test_command_line_and_library_continue_alike(tmp_path, fmnist_root, capsys):
    source = tmp_path / "dinov2.pth"
    dinov2_official(source, registers=False)
    run = tmp_path / "cli"
    assert main(["pretrain", *tiny_overrides(run, **EXTRA, **{"model.init": str(source)}), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "continuing from the backbone" in out and "heads warm up on the frozen backbone for 0.34" in out
    assert "summed over the channels" in out and "from a 37 x 37 to a 2 x 2 grid" in out
    _, saved = ckpt.latest_valid(run)
    trainer = DINOTrainer("quickstart", tiny_overrides(tmp_path / "lib", **EXTRA, **{"model.init": str(source)}),
                          in_chans=1, device="cpu")
    trainer.fit(build_loader(build_source(trainer.cfg.data, "train"), trainer.cfg.optim.batch_size,
                             trainer.cfg.train.seed))
    state = trainer.method.state()
    for part in ("student", "teacher", "loss", "ibot_loss"):
        unequal = [k for k in state[part] if not torch.equal(saved[part][k], state[part][k])]
        assert not unequal, f"{part}: {unequal[:5]}"


@pytest.mark.slow
def test_a_continued_run_killed_then_resumed_equals_an_uninterrupted_one(tmp_path, fmnist_root, capsys):
    """The killed run is a process of its own (forked ready-imported: tests/forked.py); the uninterrupted one and
    the resume run in this process (the same command)."""
    folder = hf_folder(tmp_path / "hf", tiny_vit(in_chans=1), 1)
    faults = {"optim.total_steps": 12, "train.log_every": 1, "train.checkpoint_every_minutes": 1e-6,
              "eval.knn_at_end": False, "train.threads": 1, "model.init": str(folder),
              "model.init_head_warmup": 0.25}

    def command(run):
        return ["pretrain", *tiny_overrides(run, **faults), "--no-progress"]

    reference, run = tmp_path / "reference", tmp_path / "killed"
    assert main(command(reference)) == 0
    proc = Forked(command(run))
    deadline = time.time() + 240
    while not list(run.glob("checkpoint-0000000[2-9].pt")):  # killed mid-training, around the unfreeze (step 3)
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "checkpoint-00000012.pt").exists()
    capsys.readouterr()
    assert main(command(run)) == 0
    assert "resumed from" in capsys.readouterr().out
    a, b = (torch.load(r / "checkpoint-00000012.pt", weights_only=True) for r in (reference, run))
    for part in ("student", "teacher", "loss"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
