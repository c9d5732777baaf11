"""Backbone, DINO head, student/teacher independence, and the EMA rule."""

import torch

from dinolite.config import ModelConfig
from dinolite.models import DINOHead, build_student_teacher, ema_update

TINY = ModelConfig(arch="vit_tiny_patch16_224", patch_size=4, embed_dim=32, depth=2, num_heads=2,
                   out_dim=50, hidden_dim=40, bottleneck_dim=8, drop_path_rate=0.2)


def test_backbone_takes_any_crop_size_and_head_has_dino_shape():
    student, teacher = build_student_teacher(TINY, in_chans=1, img_size=28)
    out = student([torch.randn(4, 1, 28, 28), torch.randn(6, 1, 12, 12)])
    assert out.shape == (10, 50)
    linears = [m for m in student.head.mlp if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(32, 40), (40, 40), (40, 8)]


def test_one_backbone_pass_per_resolution():
    student, _ = build_student_teacher(TINY, in_chans=1, img_size=28)
    calls = []
    student.backbone.register_forward_hook(lambda m, i, o: calls.append(i[0].shape))
    student([torch.randn(4, 1, 28, 28), torch.randn(12, 1, 12, 12)])
    assert calls == [torch.Size([4, 1, 28, 28]), torch.Size([12, 1, 12, 12])]


def test_norm_last_layer_keeps_unit_rows_and_frozen_gain():
    head = DINOHead(16, 30, 20, 8, norm_last_layer=True)
    w = head.last_layer.weight
    assert torch.allclose(w.norm(dim=1), torch.ones(30), atol=1e-5)
    assert not head.last_layer.parametrizations.weight.original0.requires_grad
    free = DINOHead(16, 30, 20, 8, norm_last_layer=False)
    assert free.last_layer.parametrizations.weight.original0.requires_grad


def test_head_output_uses_l2_normalised_bottleneck():
    head = DINOHead(16, 30, 20, 8)
    x = torch.randn(5, 16)
    z = torch.nn.functional.normalize(head.mlp(x), dim=-1)
    assert torch.allclose(head(x), z @ head.last_layer.weight.T, atol=1e-6)
    assert torch.allclose(head(x), head(x * 1.0), atol=1e-6)


def test_student_and_teacher_are_independent_copies():
    student, teacher = build_student_teacher(TINY, in_chans=1, img_size=28)
    s_ptrs = {p.data_ptr() for p in student.parameters()}
    assert not s_ptrs & {p.data_ptr() for p in teacher.parameters()}
    for (ns, ps), (nt, pt) in zip(student.state_dict().items(), teacher.state_dict().items()):
        assert ns == nt and torch.equal(ps, pt)
    assert all(not p.requires_grad for p in teacher.parameters())
    with torch.no_grad():
        next(student.parameters()).add_(1.0)
    assert not torch.equal(next(student.parameters()), next(teacher.parameters()))


def test_teacher_has_no_drop_path_and_is_deterministic_in_train_mode():
    student, teacher = build_student_teacher(TINY, in_chans=1, img_size=28)
    x = [torch.randn(3, 1, 28, 28)]
    teacher.train()
    assert torch.equal(teacher(x), teacher(x))
    student.train()
    assert not torch.equal(student(x), student(x))  # drop path 0.2 is active in the student


def test_ema_update_rule():
    student, teacher = build_student_teacher(TINY, in_chans=1, img_size=28)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    before = [p.clone() for p in teacher.parameters()]
    ema_update(teacher, student, 0.9)
    for t0, t1, s in zip(before, teacher.parameters(), student.parameters()):
        assert torch.allclose(t1, 0.9 * t0 + 0.1 * s, atol=1e-6)
