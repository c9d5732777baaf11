"""Layer-wise LR decay groups over the multi-exit model."""

import pytest
import torch

from dinolite.finetune.exits import MultiExitViT
from dinolite.finetune.optim import build_layerwise_optimizer, layer_id
from dinolite.maths.optim import set_schedule
from tests.finetune.test_exits import tiny_vit


@pytest.mark.parametrize("name,layer", [
    ("vit.patch_embed.proj.weight", 0), ("vit.cls_token", 0), ("vit.pos_embed", 0),
    ("vit.blocks.0.attn.qkv.weight", 1), ("vit.blocks.3.mlp.fc2.bias", 4),
    ("vit.norm.weight", 5), ("vit.head.weight", 5), ("exits.1.fc.weight", 5), ("hints.0.weight", 5),
])
def test_layer_ids(name, layer):
    assert layer_id(name, 4) == layer


def test_groups_scale_lr_by_depth_and_skip_decay_on_biases_and_norms():
    model = MultiExitViT(tiny_vit(), [2])
    opt = build_layerwise_optimizer(model, 4, 0.5, torch.device("cpu"))
    set_schedule(opt, 1.0, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    seen = set()
    for group in opt.param_groups:
        for p in group["params"]:
            name = names[id(p)]
            seen.add(name)
            assert group["lr"] == pytest.approx(0.5 ** (5 - layer_id(name, 4)))
            no_decay = name.endswith(".bias") or p.ndim <= 1
            assert group["weight_decay"] == (0.0 if no_decay else 0.05), name
    assert seen == set(names.values())
