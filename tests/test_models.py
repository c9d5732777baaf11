"""Backbone, DINO head, student/teacher independence, and the EMA rule."""

import torch

from dinolite.config import ModelConfig
from dinolite.maths.models import DINOHead, build_student_teacher, ema_update

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


# ---- iBOT's token path, registers, CNN backbones ---------------------------------------------------------
from dataclasses import replace  # noqa: E402

import pytest  # noqa: E402

from dinolite.errors import UserError  # noqa: E402
from dinolite.maths.models import build_backbone, vit_tokens  # noqa: E402


def test_vit_tokens_without_a_mask_is_timms_forward():
    backbone = build_backbone(replace(TINY, reg_tokens=2), in_chans=1, img_size=28).eval()
    x = torch.randn(3, 1, 28, 28)
    tokens = vit_tokens(backbone, x)
    assert tokens.shape == (3, 1 + 2 + 49, 32)  # CLS, 2 registers, 7 x 7 patches
    torch.testing.assert_close(tokens, backbone.forward_features(x))
    torch.testing.assert_close(backbone.forward_head(tokens), backbone(x))


def test_masked_patches_enter_the_blocks_as_the_mask_token():
    student, _ = build_student_teacher(TINY, in_chans=1, img_size=28, ibot=True)
    with torch.no_grad():
        student.mask_token.normal_()
    x = torch.randn(2, 1, 28, 28)
    mask = torch.zeros(2, 7, 7, dtype=torch.bool)
    mask[0, 1:3, 2:5] = True
    seen = []
    student.backbone.blocks.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    student.eval()
    vit_tokens(student.backbone, x, mask, student.mask_token)
    vit_tokens(student.backbone, x)
    masked, plain = seen
    pos = student.backbone.pos_embed[0, 1:].view(7, 7, -1)  # timm's ViT: one position per patch after CLS
    want = student.mask_token[0] + pos[1:3, 2:5]
    torch.testing.assert_close(masked[0, 1:].view(7, 7, -1)[1:3, 2:5], want)
    keep = ~mask.flatten(1)
    torch.testing.assert_close(masked[1], plain[1])  # an unmasked crop is untouched
    torch.testing.assert_close(masked[0, 1:][keep[0]], plain[0, 1:][keep[0]])


def test_patch_outputs_are_the_heads_on_the_selected_tokens():
    for separate in (False, True):
        student, teacher = build_student_teacher(TINY, in_chans=1, img_size=28, ibot=True, separate_patch_head=separate)
        assert (student.patch_head is not None) == separate
        teacher.eval()
        x = torch.randn(3, 1, 28, 28)
        select = torch.rand(3, 7, 7) < 0.3
        views = teacher([x, torch.randn(6, 1, 12, 12)], select=select)
        tokens = vit_tokens(teacher.backbone, x)[:, 1:][select.flatten(1)]
        head = teacher.patch_head if separate else teacher.head
        torch.testing.assert_close(views.patch_out, head(tokens))
        assert views.out.shape == (9, 50) and views.feats.shape == (9, 32)
        torch.testing.assert_close(views.out[:3], teacher.head(teacher.backbone(x)))


def test_ibot_student_mask_reaches_the_loss_only_through_masked_crops():
    """A crop without a mask gives the same CLS output as without iBOT; a masked one differs."""
    student, _ = build_student_teacher(replace(TINY, drop_path_rate=0.0), in_chans=1, img_size=28, ibot=True)
    with torch.no_grad():
        student.mask_token.normal_()
    x = torch.randn(2, 1, 28, 28)
    mask = torch.zeros(2, 7, 7, dtype=torch.bool)
    mask[1, :3, :3] = True
    views = student([x], mask=mask, select=mask)
    plain = student([x])
    torch.testing.assert_close(views.out[0], plain[0])
    assert not torch.allclose(views.out[1], plain[1])
    assert views.patch_out.shape == (9, 50)


def test_cnn_backbones_take_both_crop_sizes_and_refuse_vit_options():
    cnn = ModelConfig(arch="resnet10t", out_dim=20, hidden_dim=16, bottleneck_dim=8, drop_path_rate=0.0)
    student, _ = build_student_teacher(cnn, in_chans=1, img_size=28)
    calls = []
    student.backbone.register_forward_hook(lambda m, i, o: calls.append(o.shape))
    assert student([torch.randn(4, 1, 28, 28), torch.randn(8, 1, 14, 14)]).shape == (12, 20)
    assert calls == [torch.Size([4, 512]), torch.Size([8, 512])]  # pooled features, one pass per resolution
    with pytest.raises(UserError, match="model.patch_size applies to ViTs only"):
        build_student_teacher(replace(cnn, patch_size=7), in_chans=1, img_size=28)
    with pytest.raises(UserError, match="ibot_weight > 0 needs a ViT"):
        build_student_teacher(cnn, in_chans=1, img_size=28, ibot=True)
