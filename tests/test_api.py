"""The public API: building blocks from ``dinolite`` with plain arguments, DINOTrainer with hooks, and the
example script that uses nothing else."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

import dinolite

ROOT = Path(__file__).resolve().parents[1]


def test_building_blocks_take_plain_arguments():
    from dinolite import AugmentConfig, DINOHead, DINOLoss, MultiCrop, build_student_teacher, cosine, knn_accuracy

    crop = MultiCrop({"global_crops_size": 16}, local_crops_number=2, local_crops_size=8, mean=[0.5], std=[0.5])
    assert crop.cfg == AugmentConfig(global_crops_size=16, local_crops_number=2, local_crops_size=8, mean=[0.5], std=[0.5])
    views = crop(torch.rand(3, 1, 20, 20))  # float images, no sizes, no generator
    assert views.globals_.shape == (6, 1, 16, 16) and views.locals_.shape == (6, 1, 8, 8)
    with pytest.raises(TypeError, match="unknown augmentation settings"):
        MultiCrop(global_crop_size=16)
    student, teacher = build_student_teacher(arch="vit_tiny_patch16_224", patch_size=4, embed_dim=32, depth=1,
                                             num_heads=2, out_dim=40, in_chans=1, img_size=16)
    assert isinstance(student.head, DINOHead) and student(views.by_resolution()).shape == (12, 40)
    assert DINOLoss(40)(student(views.by_resolution()), teacher([views.globals_]), 0.04).ndim == 0
    assert cosine(0, 10, 1.0, 0.0) == 1.0 and knn_accuracy is dinolite.knn_accuracy
    with pytest.raises(AttributeError):
        dinolite.no_such_thing  # noqa: B018


def test_trainer_runs_the_dino_step_with_hooks_and_schedules():
    from dinolite import DINOTrainer, MultiCrop, build_student_teacher

    torch.manual_seed(0)
    student, teacher = build_student_teacher(arch="vit_tiny_patch16_224", patch_size=4, embed_dim=32, depth=1,
                                             num_heads=2, out_dim=40, hidden_dim=32, bottleneck_dim=8,
                                             in_chans=1, img_size=16)
    before = [p.clone() for p in teacher.parameters()]
    last_layer = student.head.last_layer.parametrizations.weight.original1.clone()
    trainer = DINOTrainer(student, teacher, MultiCrop(global_crops_size=16, local_crops_number=2, local_crops_size=8,
                                                      mean=[0.5], std=[0.5]),
                          lr=1e-3, warmup_steps=2, freeze_last_layer_steps=3, device="cpu")
    data = [(torch.randint(0, 256, (4, 1, 20, 20), dtype=torch.uint8), torch.zeros(4)) for _ in range(3)]
    steps, epochs = [], []
    history = trainer.fit(data, epochs=2, after_step=lambda t, f: steps.append(f["step"]),
                          after_epoch=lambda t, e: epochs.append(e))
    assert steps == [1, 2, 3, 4, 5, 6] and epochs == [{"epoch": 1, "steps": 3}, {"epoch": 2, "steps": 6}]
    assert all(math.isfinite(h["loss"]) for h in history)
    assert history[0]["lr"] == 0.0 and history[2]["lr"] == pytest.approx(1e-3)  # linear warm-up, then cosine
    assert history[-1]["momentum"] > history[0]["momentum"]
    assert any(not torch.equal(a, b) for a, b in zip(before, teacher.parameters()))  # the EMA moved the teacher
    assert not torch.equal(student.head.last_layer.parametrizations.weight.original1, last_layer)  # unfrozen at 3
    with pytest.raises(ValueError, match="steps_per_epoch"):
        trainer.fit(iter(data))


def test_the_example_trains_with_the_public_api_only():
    spec = importlib.util.spec_from_file_location("custom_loop", ROOT / "examples" / "custom_loop.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    source = (ROOT / "examples" / "custom_loop.py").read_text()
    assert "dinolite." not in source.replace("dinolite.__version__", "")  # only names exported by dinolite
    out = module.main(["--steps", "4", "--batch", "32"])
    assert len(out["history"]) == 4 and all(math.isfinite(h["loss"]) for h in out["history"])
    assert all(0 <= v <= 100 for v in out["knn"].values())
