"""Continue pretraining (model.init): student, teacher, heads and centers are taken bit for bit from a dinolite
run or a checkpoint in the reference DINO layout; the optimizer and the step start afresh; what does not fit
is one line, with nothing written."""

from __future__ import annotations

import argparse

import pytest
import torch

from dinolite.cli import main
from dinolite.config import load_config
from dinolite.engine import checkpoint as ckpt
from dinolite.errors import UserError
from dinolite.maths.models import build_student_teacher
from dinolite.pretraining.train import Pretrainer
from tests.helpers import tiny_config, tiny_overrides

DINO_ONLY = {"loss.ibot_weight": 0}


def reference_layout(state: dict, ddp: bool) -> dict:
    """A dinolite model's state under the names of the reference code's ``MultiCropWrapper`` (``backbone.``,
    ``head.``, ``torch.nn.utils.weight_norm``'s ``weight_g`` / ``weight_v``), with DDP's prefix if ``ddp``."""
    names = {"parametrizations.weight.original0": "weight_g", "parametrizations.weight.original1": "weight_v"}
    out = {}
    for key, value in state.items():
        for new, old in names.items():
            key = key.replace(new, old)
        out[("module." if ddp else "") + key] = value.clone()
    return out


def write_reference_checkpoint(path, cfg) -> dict:
    """The dict main_dino.py saves: student (DDP), teacher, optimizer, epoch, args (a Namespace), dino_loss."""
    torch.manual_seed(7)
    student, teacher = build_student_teacher(cfg.model, 1, cfg.augment.global_crops_size)
    with torch.no_grad():
        for p in [*student.parameters(), *teacher.parameters()]:
            p.add_(torch.randn_like(p))  # not what a fresh run would draw
    saved = {
        "student": reference_layout(student.state_dict(), ddp=True),
        "teacher": reference_layout(teacher.state_dict(), ddp=False),
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "weight_decay": 0.04, "params": [0, 1]}]},
        "epoch": 7,
        "args": argparse.Namespace(arch="vit_small", patch_size=16, out_dim=cfg.model.out_dim, lr=0.0005,
                                   norm_last_layer=True, local_crops_scale=(0.05, 0.4), output_dir="/x"),
        "dino_loss": {"center": torch.randn(1, cfg.model.out_dim)},
    }
    torch.save(saved, path)
    return saved


def test_continues_from_a_reference_dino_checkpoint(tmp_path, fmnist_root, capsys):
    cfg = tiny_config(tmp_path / "run", **DINO_ONLY)
    source = tmp_path / "checkpoint.pth"
    saved = write_reference_checkpoint(source, cfg)
    trainer = Pretrainer(tiny_config(tmp_path / "run", **DINO_ONLY, **{"model.init": str(source)}), progress=False)
    m = trainer.method
    assert trainer.step == 0 and not m.optimizer.state  # the optimizer and the step start afresh
    assert torch.equal(m.dino_loss.center, saved["dino_loss"]["center"])
    for model, theirs, prefix in ((m.student_module, saved["student"], "module."), (m.teacher, saved["teacher"], "")):
        ours = reference_layout(model.state_dict(), ddp=bool(prefix))
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert "continuing from" in capsys.readouterr().out


def test_continues_a_dinolite_run_and_trains_on(tmp_path, fmnist_root, capsys):
    first = tmp_path / "first"
    assert main(["pretrain", *tiny_overrides(first, **{"optim.total_steps": 3, "eval.knn_at_end": False}),
                 "--no-progress"]) == 0
    _, done = ckpt.latest_valid(first)
    second = tmp_path / "second"
    trainer = Pretrainer(tiny_config(second, **{"model.init": str(first)}), progress=False)
    m = trainer.method
    for part, model in (("student", m.student_module), ("teacher", m.teacher)):
        assert all(torch.equal(done[part][k], v) for k, v in model.state_dict().items())
    assert torch.equal(m.dino_loss.center, done["loss"]["center"])
    assert torch.equal(m.ibot_loss.center, done["ibot_loss"]["center"])
    assert trainer.step == 0 and not m.optimizer.state
    # and the command line trains on from there, in its own run directory
    capsys.readouterr()
    assert main(["pretrain", *tiny_overrides(tmp_path / "third", **{"optim.total_steps": 2, "eval.knn_at_end": False,
                                                                    "model.init": str(first)}), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"continuing from {first}" in out and "finished at step 2/2" in out


def test_a_model_that_does_not_fit_is_one_line_and_nothing_is_written(tmp_path, fmnist_root, capsys):
    source = tmp_path / "checkpoint.pth"
    write_reference_checkpoint(source, tiny_config(tmp_path / "x", **DINO_ONLY))
    run = tmp_path / "run"
    code = main(["pretrain", *tiny_overrides(run, **DINO_ONLY, **{"model.embed_dim": 48, "model.init": str(source)})])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "backbone.cls_token (1, 1, 32) in the file, (1, 1, 48) here" in err and "model.*" in err
    assert not (run / "config.yaml").exists() and not ckpt.list_checkpoints(run)


class NotATensor:
    """A class the checkpoint reader must refuse to build (it would be code run by unpickling)."""


@pytest.mark.parametrize(("content", "expected"), [
    ({"student": {"w": torch.ones(1)}, "teacher": {"w": torch.ones(1)}, "hook": NotATensor()}, "would run code"),
    ({"cls_token": torch.ones(1, 1, 32)}, "not a full training checkpoint"),
    ({"student": {"w": torch.ones(1)}, "teacher": {"w": torch.ones(1)}, "dino_loss": {"c": torch.ones(1)}},
     "holds no center"),
], ids=["pickled-object", "backbone-only", "no-center"])
def test_files_that_are_not_training_checkpoints_are_one_line(tmp_path, content, expected):
    path = tmp_path / "file.pth"
    torch.save(content, path)
    from dinolite.methods.warmstart import read_init

    with pytest.raises(UserError, match=expected) as err:
        read_init(path)
    assert "\n" not in str(err.value)


def test_a_missing_init_is_refused_by_the_config():
    with pytest.raises(UserError, match="model.init=/no/such/run not found"):
        load_config("quickstart", ["model.init=/no/such/run"])


def test_the_library_api_continues_too(tmp_path, fmnist_root):
    from dinolite.pretraining.library import DINOTrainer

    source = tmp_path / "checkpoint.pth"
    saved = write_reference_checkpoint(source, tiny_config(tmp_path / "x", **DINO_ONLY))
    trainer = DINOTrainer("quickstart", tiny_overrides(tmp_path / "r", **DINO_ONLY, **{"model.init": str(source)}),
                          in_chans=1, device="cpu")
    assert torch.equal(trainer.method.dino_loss.center, saved["dino_loss"]["center"])
    ours = reference_layout(trainer.teacher.state_dict(), ddp=False)
    assert all(torch.equal(ours[k], saved["teacher"][k]) for k in ours)
