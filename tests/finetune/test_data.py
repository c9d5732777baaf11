"""Labelled data only: one-line errors for unlabelled images, unknown test classes, classes without images."""

import numpy as np
import pytest
from PIL import Image

from dinolite.cli import main
from dinolite.errors import UserError
from dinolite.finetune.data import check_batch_labels
from dinolite.finetune.methods import finetune
from tests.finetune.helpers import ft_config, ft_overrides, write_tiny_backbone
from tests.helpers import write_unlabelled_shard


def image_folder(root, train: dict, val: dict):
    """``root/train/<class>/k.png`` (and val): ``{class: number of images}``; 0 makes an empty class folder."""
    rng = np.random.default_rng(0)
    for split, classes in (("train", train), ("val", val)):
        for name, n in classes.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for k in range(n):
                Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(root / split / name / f"{k}.png")
    return root


def folder_config(tmp_path, root):
    return ft_config(tmp_path / "run", tmp_path / "unused.safetensors", **{
        "data.source": "folder", "data.root": str(root), "data.subset": 0, "data.test_subset": 0,
        "optim.batch_size": 2, "augment.mean": "[0.5,0.5,0.5]", "augment.std": "[0.25,0.25,0.25]"})


@pytest.mark.parametrize("train,val,fragment", [
    ({"a": 3}, {"a": 2}, "has 1 class(es)"),
    ({"a": 3, "b": 3}, {"a": 1, "c": 1}, "test split's classes differ"),
    ({"a": 3, "b": 0}, {"a": 1, "b": 0}, "labels missing from the training data: class(es) ['b']"),
])
def test_folder_without_usable_labels_is_refused(tmp_path, train, val, fragment):
    root = image_folder(tmp_path / "imgs", train, val)
    with pytest.raises(UserError, match=fragment.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")) as err:
        finetune(folder_config(tmp_path, root), progress=False)
    assert "\n" not in str(err.value)


def test_shards_without_labels_stop_with_one_line(tmp_path, capsys):
    shards = write_unlabelled_shard(tmp_path / "shards", 8, ["a", "b"])
    init = write_tiny_backbone(tmp_path / "bb.safetensors")
    args = ft_overrides(tmp_path / "run", init, **{"data.subset": 0, "data.test_subset": 0, "optim.batch_size": 4})
    code = main(["finetune", "--no-progress", "--data", f"eval_shards={shards}", str(shards), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "carry no label" in err and len(err.splitlines()) == 1


def test_batch_label_check():
    import torch

    check_batch_labels(torch.tensor([0, 1, 2]), 3, "x")
    with pytest.raises(UserError, match="carry no label"):
        check_batch_labels(torch.tensor([0, -1]), 3, "x")
    with pytest.raises(UserError, match="has label 3 but the training split has only 3 classes"):
        check_batch_labels(torch.tensor([3]), 3, "x")
