"""--init resolution, fresh models, and the teacher checks of born-again."""

import pytest
import torch

from dinolite.errors import UserError
from dinolite.finetune.methods import finetune
from dinolite.finetune.model import build_model, model_meta, resolve_init, save_model
from tests.finetune.helpers import ft_config, write_tiny_backbone


def test_timm_init_random_is_seeded_and_fresh_models_share_the_backbone(tmp_path):
    extra = {"model.timm_pretrained": "false", "model.timm_kwargs": "{patch_size: 7, embed_dim: 32, depth: 2, num_heads: 2, img_size: 28}"}
    cfg = ft_config(tmp_path, "timm:vit_tiny_patch16_224", **extra)
    a, b = resolve_init(cfg, 1), resolve_init(cfg, 1)
    assert a.img_size == 28 and a.kwargs["in_chans"] == 1 and a.kwargs["depth"] == 2
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    m0, m1 = build_model(a, 10, [], False, 0.1, 0.02, seed=0), build_model(a, 10, [], False, 0.1, 0.02, seed=1)
    for k, v in a.state_dict.items():
        assert torch.equal(m0.vit.state_dict()[k], v) and torch.equal(m1.vit.state_dict()[k], v)
    assert not torch.equal(m0.vit.head.weight, m1.vit.head.weight)  # new heads from each seed
    assert torch.equal(m0.vit.head.bias, torch.zeros(10))


def test_bad_inits_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="not a timm model"):
        resolve_init(ft_config(tmp_path, "timm:no_such_model_xyz"), 1)
    rgb = write_tiny_backbone(tmp_path / "rgb.safetensors", in_chans=3)
    with pytest.raises(UserError, match="takes 3-channel images but the data has 1"):
        resolve_init(ft_config(tmp_path, rgb), 1)


def teacher_file(tmp_path, name, num_classes=10, **changes):
    """A fine-tuned model file (untrained is enough for the checks) of a chosen architecture and class count."""
    init_path = write_tiny_backbone(tmp_path / f"{name}-init.safetensors", **changes)
    init = resolve_init(ft_config(tmp_path, init_path), 1)
    model = build_model(init, num_classes, [], False, 0.0, 0.02, 0)
    classes = [f"c{i}" for i in range(num_classes)]
    if num_classes == 10:
        from dinolite.data.fashion_mnist import CLASSES

        classes = list(CLASSES)
    path = tmp_path / f"{name}.safetensors"
    save_model(model, model_meta(model, init, classes, 28, [0.286], [0.353]), path)
    return path


@pytest.mark.parametrize("name,num_classes,changes,fragment", [
    ("deeper", 10, {"depth": 3}, "another architecture than the student (depth 3 vs 4"),
    ("wider", 10, {"embed_dim": 64}, "embed_dim 64 vs 32"),
    ("five", 5, {}, "predicts 5 classes but the data has 10"),
])
def test_teacher_of_another_architecture_or_class_count_is_refused(tmp_path, name, num_classes, changes, fragment):
    teacher = teacher_file(tmp_path, name, num_classes, **changes)
    init = write_tiny_backbone(tmp_path / "student.safetensors")
    cfg = ft_config(tmp_path / "run", init, "born-again", **{"born_again.teacher": str(teacher)})
    with pytest.raises(UserError, match=fragment.replace("(", r"\(")) as err:
        finetune(cfg, progress=False)
    assert "\n" not in str(err.value) and str(teacher) in str(err.value)


def test_a_non_finetune_file_is_not_a_teacher(tmp_path):
    init = write_tiny_backbone(tmp_path / "student.safetensors")
    cfg = ft_config(tmp_path / "run", init, "born-again", **{"born_again.teacher": str(init)})
    with pytest.raises(UserError, match="is not a 'dinolite finetune' model"):
        finetune(cfg, progress=False)
