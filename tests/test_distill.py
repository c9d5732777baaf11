"""Distillation: the objectives against the equations, then real runs on Fashion-MNIST from a real teacher run:
several students (a ViT and a CNN) fed by one teacher forward, exported for timm, resumed exactly after kill -9,
and bad input as one line with nothing written."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time

import pytest
import timm
import torch
import torch.nn.functional as F

from dinolite.cli import main
from dinolite.config import load_config, load_distill_config
from dinolite.errors import UserError
from dinolite.methods.distill import DistillMethod, distill_cross_entropy, feature_loss, load_teacher
from tests.forked import Forked
from tests.helpers import tiny_overrides

STUDENTS = ("distill.students=[{arch: vit_tiny_patch16_224, patch_size: 7, embed_dim: 16, depth: 1, num_heads: 2, "
            "out_dim: 64, hidden_dim: 32, bottleneck_dim: 16}, {arch: resnet10t, out_dim: 64, hidden_dim: 32, "
            "bottleneck_dim: 16}]")
VIT, CNN = "vit_tiny_patch16_224-w16-d1", "resnet10t"


def distill_args(teacher, run, objective="feature", **extra) -> list[str]:
    settings = {"optim.total_steps": 4, "eval.knn_at_end": False, "model.patch_size": 7, **extra}
    return ["distill", "--no-progress", "--teacher", str(teacher), *tiny_overrides(run, **settings), STUDENTS,
            f"distill.objective={objective}"]


# ---- the objectives, from their equations ------------------------------------------------------

def test_feature_loss_is_one_minus_the_mean_cosine():
    s, t = torch.randn(6, 5), torch.randn(6, 5)
    expected = 1 - sum(float(s[i] @ t[i] / (s[i].norm() * t[i].norm())) for i in range(6)) / 6
    assert float(feature_loss(s, t)) == pytest.approx(expected, rel=1e-5)
    assert float(feature_loss(3 * t, t)) == pytest.approx(0.0, abs=1e-6)  # the scale does not matter


def test_distill_cross_entropy_averages_every_pair_the_same_view_included():
    b, k, views = 3, 7, 4
    student, p = torch.randn(views * b, k), torch.softmax(torch.randn(2 * b, k), dim=-1)
    log_s = F.log_softmax(student / 0.1, dim=-1)
    pairs = [-(p[i * b:(i + 1) * b] * log_s[j * b:(j + 1) * b]).sum(-1).mean() for i in range(2) for j in range(views)]
    assert float(distill_cross_entropy(student, p, 0.1)) == pytest.approx(float(sum(pairs) / len(pairs)), rel=1e-5)


# ---- real runs --------------------------------------------------------------------------------

def test_one_teacher_trains_a_vit_and_a_cnn_and_each_is_exported_for_timm(tiny_run, tmp_path, capsys):
    run = tmp_path / "distill"
    teacher_file = tiny_run / "teacher_backbone.safetensors"
    before = teacher_file.read_bytes()
    assert main(distill_args(tiny_run, run, **{"eval.knn_at_end": True})) == 0
    out = capsys.readouterr().out
    assert f"into {VIT}, {CNN}" in out and "finished at step 4/4" in out
    assert f"student {VIT}" in out and f"student {CNN}" in out and "its teacher" in out
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in metrics if "loss" in r]
    assert logged, "no loss record in metrics.jsonl"
    assert all(math.isfinite(r[f"loss_{VIT}"]) and math.isfinite(r[f"loss_{CNN}"]) for r in logged)
    assert teacher_file.read_bytes() == before  # the teacher is never written
    _, state = __import__("dinolite.engine.checkpoint", fromlist=["x"]).latest_valid(run)
    for name in (VIT, CNN):
        model = timm.create_model(f"local-dir:{run / 'students' / name}", pretrained=True).eval()
        ours = {k[len(f"backbones.{name}."):]: v for k, v in state["students"].items()
                if k.startswith(f"backbones.{name}.")}
        exported = model.state_dict()
        assert ours and set(ours) == set(exported), f"{name}: the checkpoint's and the export's keys differ"
        assert all(torch.equal(exported[k], v) for k, v in ours.items())


def test_one_teacher_forward_per_step_feeds_every_student(tiny_run, tmp_path):
    cfg = load_config("distill_fmnist", tiny_overrides(tmp_path / "r", **{"model.patch_size": 7}) +
                      [f"distill.teacher={tiny_run}", STUDENTS])
    method = DistillMethod(cfg, 1, "cpu")
    calls = []
    method.teacher.backbone.register_forward_hook(lambda *a: calls.append(1))
    images = torch.randint(0, 256, (cfg.optim.batch_size, 1, 28, 28), dtype=torch.uint8)
    sched = method.schedule(0, __import__("dinolite.maths.schedules", fromlist=["x"]).Plan(4, 4, 1, 0, 0))
    loss, terms = method.train_step(method.make_crops(images, None, 0), sched)
    assert len(calls) == 1 and set(terms) == {f"loss_{VIT}", f"loss_{CNN}"}
    assert torch.isclose(loss, terms[f"loss_{VIT}"] + terms[f"loss_{CNN}"])


def test_dino_head_objective_learns_the_teachers_head_from_its_center(tiny_run, tmp_path, capsys):
    run = tmp_path / "head"
    assert main(distill_args(tiny_run, run, "dino_head")) == 0
    cfg = load_config("distill_fmnist", tiny_overrides(tmp_path / "r", **{"model.patch_size": 7}) +
                      [f"distill.teacher={tiny_run}", STUDENTS, "distill.objective=dino_head"])
    teacher = load_teacher(cfg)
    _, saved = __import__("dinolite.engine.checkpoint", fromlist=["x"]).latest_valid(tiny_run)
    assert torch.equal(teacher.center, saved["loss"]["center"])
    assert all(torch.equal(v, saved["teacher"][f"head.{k}"]) for k, v in teacher.head.state_dict().items())
    # an export holds the backbone alone: no head to distil from
    export = tmp_path / "export"
    assert main(["export", str(tiny_run), "--out", str(export)]) == 0
    capsys.readouterr()
    assert main(distill_args(export, tmp_path / "no-head", "dino_head")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs a teacher with its DINO head" in err
    assert not (tmp_path / "no-head" / "config.yaml").exists()


@pytest.mark.parametrize(("change", "expected"), [
    ({"teacher": "not-a-checkpoint"}, "is not a dinolite or DINO checkpoint"),
    ({"extra": ["distill.students=[{arch: no_such_net}]"]}, "is not a timm model"),
    ({"extra": ["data.root=/no/such/folder"]}, "/no/such/folder"),
    ({"extra": ["distill.objective=logits"]}, "distill.objective must be feature or dino_head"),
], ids=["teacher-not-a-checkpoint", "unknown-student", "missing-data", "unknown-objective"])
def test_bad_input_is_one_line_and_nothing_is_written(tiny_run, tmp_path, capsys, change, expected):
    teacher = tiny_run
    if change.get("teacher"):
        teacher = tmp_path / "teacher.pt"
        teacher.write_text("this is not a checkpoint\n")
    run = tmp_path / "run"
    assert main(distill_args(teacher, run) + change.get("extra", [])) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err
    assert not (run / "config.yaml").exists()


def test_students_without_a_teacher_are_refused():
    with pytest.raises(UserError, match="distill.students is set but distill.teacher is not"):
        load_config("distill_fmnist", ['distill.teacher=""'])


def test_distill_without_a_teacher_is_refused(tmp_path, capsys):
    with pytest.raises(UserError, match="dinolite distill needs a teacher"):
        load_distill_config("distill_fmnist", ['distill.teacher=""', "distill.students=[]"])
    run = tmp_path / "r"
    assert main(["distill", "--no-progress", *tiny_overrides(run), 'distill.teacher=""', "distill.students=[]"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs a teacher" in err, err
    assert not run.exists()


# ---- kill -9, then resume: the same students as an uninterrupted run ----------------------------

FAULTS = {"optim.total_steps": 12, "train.log_every": 1, "train.checkpoint_every_minutes": 1e-6,
          "eval.knn_at_end": False, "train.threads": 1}


def students_at_the_end(run) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoint-00000012.pt", map_location="cpu", weights_only=True)["students"]


@pytest.mark.slow
def test_a_distillation_killed_then_resumed_equals_an_uninterrupted_one(tiny_run, tmp_path):
    """The killed distillation is a process of its own (forked ready-imported: tests/forked.py); the uninterrupted
    one and the resume run in this process (the same command)."""
    reference, run = tmp_path / "reference", tmp_path / "killed"
    assert main(distill_args(tiny_run, reference, **FAULTS)) == 0
    proc = Forked(distill_args(tiny_run, run, **FAULTS))
    deadline = time.time() + 240
    while not list(run.glob("checkpoint-0000000[3-9].pt")):  # killed mid-training, some checkpoints written
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "checkpoint-00000012.pt").exists()
    assert main(distill_args(tiny_run, run, **FAULTS)) == 0
    a, b = students_at_the_end(reference), students_at_the_end(run)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (run / "students" / VIT / "model.safetensors").is_file()


def test_a_timm_architecture_with_a_weights_file_teaches(tmp_path, fmnist_root, capsys):
    from safetensors.torch import save_file

    teacher = timm.create_model("resnet10t", pretrained=False, num_classes=0, in_chans=1)
    weights = tmp_path / "resnet10t.safetensors"
    save_file({k: v.contiguous() for k, v in teacher.state_dict().items()}, str(weights))
    run = tmp_path / "run"
    assert main(distill_args(weights, run, **{"optim.total_steps": 2}) + ["distill.teacher_arch=resnet10t"]) == 0
    assert "finished at step 2/2" in capsys.readouterr().out
    cfg = load_config("distill_fmnist", [f"distill.teacher={weights}", "distill.teacher_arch=resnet10t"])
    loaded = load_teacher(cfg).backbone
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in teacher.state_dict().items())


@pytest.mark.slow
def test_two_processes_distil_as_one(tiny_run, tmp_path):
    """The students' gradients are averaged by DDP and the targets' center over the global batch: 2 processes
    under torchrun give the 1-process students (a ViT student: no batch norm, whose statistics stay per process)."""
    from tests.test_distributed import free_port

    vit_only = ("distill.students=[{arch: vit_tiny_patch16_224, patch_size: 7, embed_dim: 16, depth: 1, num_heads: 2,"
                " out_dim: 64, hidden_dim: 32, bottleneck_dim: 16, drop_path_rate: 0.0}]")
    settings = {"optim.total_steps": 4, "train.log_every": 2, "train.threads": 1}
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(distill_args(tiny_run, one, "dino_head", **settings) + [vit_only]) == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           "-m", "dinolite.cli", *distill_args(tiny_run, two, "dino_head", **settings), vit_only]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    a = torch.load(one / "checkpoint-00000004.pt", map_location="cpu", weights_only=True)
    b = torch.load(two / "checkpoint-00000004.pt", map_location="cpu", weights_only=True)
    for part in ("students", "targets"):
        for k in a[part]:
            torch.testing.assert_close(a[part][k], b[part][k], rtol=1e-4, atol=1e-5, msg=k)


def test_a_distillation_run_directory_points_to_its_students(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(distill_args(tiny_run, run, **{"optim.total_steps": 1})) == 0
    capsys.readouterr()
    assert main(["knn", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "distillation run's checkpoint" in err and CNN in err
    assert main(["knn", str(run / "students" / CNN), "--bank-subset", "64", "--query-subset", "32"]) == 0
