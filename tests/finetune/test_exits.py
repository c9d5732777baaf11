"""The multi-exit ViT: exits read the configured blocks, the final exit is the timm classifier, all exits train."""

import pytest
import timm
import torch

from dinolite.errors import UserError
from dinolite.finetune.exits import MultiExitViT, check_exit_blocks, default_exit_blocks
from dinolite.finetune.objectives import Layerwise
from tests.finetune.helpers import TINY_KWARGS


def tiny_vit(num_classes=10, depth=4):
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, **{**TINY_KWARGS, "depth": depth,
                                                                          "num_classes": num_classes})


def cls_after_each_block(vit, x):
    """Independent of forward_intermediates: run the blocks one by one and keep each CLS token."""
    h = vit.norm_pre(vit._pos_embed(vit.patch_embed(x)))
    out = []
    for block in vit.blocks:
        h = block(h)
        out.append(h[:, 0])
    return out


@pytest.mark.parametrize("depth,expected", [(4, [1, 2, 3]), (12, [3, 6, 9]), (6, [2, 3, 5]), (2, [1])])
def test_default_exits_at_quarters_of_the_depth(depth, expected):
    assert default_exit_blocks(depth) == expected


def test_exits_read_the_configured_blocks():
    model = MultiExitViT(tiny_vit(), [1, 3]).eval()
    x = torch.randn(3, 1, 28, 28)
    logits = model(x)
    assert len(logits) == 3 and model.exit_depths == [1, 3, 4]
    cls = cls_after_each_block(model.vit, x)
    for head, block, z in zip(model.exits, [1, 3], logits):
        torch.testing.assert_close(z, head(cls[block - 1])[0])
    # the final exit is the plain timm classifier
    torch.testing.assert_close(logits[-1], model.vit(x))
    # and a wrong block would not match
    assert not torch.allclose(logits[0], model.exits[0](cls[1])[0])


def test_model_without_exits_is_the_timm_classifier():
    vit = tiny_vit().eval()
    x = torch.randn(2, 1, 28, 28)
    out = MultiExitViT(vit, []).eval()(x)
    assert len(out) == 1
    torch.testing.assert_close(out[0], vit(x))


@pytest.mark.parametrize("blocks,fragment", [([0], "block 0"), ([4], "block 4"), ([2, 7], "block 7"), ([2, 2], "twice")])
def test_exit_blocks_outside_the_depth_are_refused(blocks, fragment):
    with pytest.raises(UserError, match=fragment) as err:
        MultiExitViT(tiny_vit(), blocks)
    assert "\n" not in str(err.value)
    if "twice" not in fragment:
        assert "1..3" in str(err.value)


def test_one_block_backbone_cannot_have_exits():
    with pytest.raises(UserError, match="at least 2"):
        check_exit_blocks([1], 1)


def test_all_exits_and_hints_train():
    model = MultiExitViT(tiny_vit(), [1, 2, 3], hint=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    loss, logs = Layerwise(3.0, 1.0, 0.5)(model, x, x, y, None)
    loss.backward()
    for i in range(3):
        assert model.exits[i].fc.weight.grad.abs().sum() > 0, f"exit {i} got no gradient"
        assert model.hints[i].weight.grad.abs().sum() > 0, f"hint {i} got no gradient"
    assert model.vit.head.weight.grad.abs().sum() > 0 and "hint" in logs
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    after = model.state_dict()
    changed = {k.split(".")[0] + "." + k.split(".")[1] for k in after if not torch.equal(before[k], after[k])}
    assert {"exits.0", "exits.1", "exits.2", "hints.0", "vit.head", "vit.blocks"} <= changed
