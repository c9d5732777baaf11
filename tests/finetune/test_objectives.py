"""The objectives on real tiny models: no gradient reaches a teacher, the right views are compared."""

import timm
import torch

from dinolite.finetune import losses
from dinolite.finetune.augment import ConsistencyView
from dinolite.finetune.exits import MultiExitViT
from dinolite.finetune.objectives import BornAgain, Consistency, Supervised
from tests.finetune.helpers import TINY_KWARGS


def model(seed, drop_path=0.0):
    torch.manual_seed(seed)
    vit = timm.create_model("vit_tiny_patch16_224", **{**TINY_KWARGS, "num_classes": 10, "drop_path_rate": drop_path})
    return MultiExitViT(vit)


def test_frozen_generation_gets_no_gradient_and_stays_in_eval_mode():
    teacher, student = model(0, drop_path=0.5).train(), model(1)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    objective = BornAgain(teacher, alpha=0.5, temperature=2.0)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    x, y = torch.rand(6, 1, 28, 28), torch.randint(0, 10, (6,))
    loss, logs = objective(student, x, x, y, None)
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in student.parameters() if p.requires_grad)
    torch.optim.SGD(student.parameters(), lr=1.0).step()
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    # the loss is the formula on the teacher's eval-mode logits (drop path off: deterministic)
    with torch.no_grad():
        t1, t2 = teacher(x)[-1], teacher(x)[-1]
    assert torch.equal(t1, t2)


def test_born_again_loss_uses_the_teacher_on_the_same_views():
    teacher, student = model(0), model(1)
    x, y = torch.rand(5, 1, 28, 28), torch.randint(0, 10, (5,))
    loss, _ = BornAgain(teacher, 0.25, 3.0)(student, x, x, y, None)
    with torch.no_grad():
        expected, _ = losses.born_again_loss(student(x)[-1], teacher(x)[-1], y, 0.25, 3.0)
    torch.testing.assert_close(loss.detach(), expected)


def test_consistency_compares_clean_and_augmented_view_of_the_same_images():
    student = model(2).eval()
    raw = torch.rand(4, 1, 28, 28)
    x, y = (raw - 0.5) / 0.25, torch.randint(0, 10, (4,))
    view = ConsistencyView(1.0, [0.5], [0.25])
    loss, logs = Consistency(view, 2.0, 1.5)(student, x, raw, y, torch.Generator().manual_seed(0))
    strong = view(raw, torch.Generator().manual_seed(0))
    with torch.no_grad():
        clean, aug = student(x)[-1], student(strong)[-1]
    torch.testing.assert_close(logs["consistency"], losses.kd_kl(aug, clean, 1.5), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(loss.detach(), losses.cross_entropy(clean, y) + 2.0 * losses.kd_kl(aug, clean, 1.5),
                               rtol=1e-4, atol=1e-5)
    # strength 0: aug(x) is x, so the consistency term vanishes and only the CE is left
    loss0, logs0 = Consistency(ConsistencyView(0.0, [0.5], [0.25]), 2.0, 1.5)(student, x, raw, y, torch.Generator())
    assert logs0["consistency"].abs().item() < 1e-5
    torch.testing.assert_close(loss0.detach(), Supervised()(student, x, raw, y, None)[0].detach(), rtol=1e-5, atol=1e-5)
