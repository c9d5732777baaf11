"""One grammar of ``key=value`` items for every command: the same forms and the same one-line errors for
``pretrain`` and ``finetune`` overrides and the ``--data`` items of every command."""

import re

import pytest

from dinolite.commands.common import eval_config
from dinolite.config import Config, load_config
from dinolite.errors import UserError
from dinolite.finetune.config import FinetuneConfig
from dinolite.finetune.recipe import load_finetune_config
from dinolite.overrides import data_items

PLACES = {  # each place that reads items, and the word its messages use for them
    "pretrain": (lambda items: load_config(None, items), "override"),
    "finetune": (lambda items: load_finetune_config(None, ["init=x", *items]), "override"),
    "finetune --data": (lambda items: load_finetune_config(None, ["init=x", *data_items(items, FinetuneConfig)]),
                        "override"),
    "knn/linear --data": (lambda items: eval_config(None, items), "--data item"),
}


KEYS = r"; see .* for the keys and types$"


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("item,pattern", [
    ("data.num_workers=many", r"^bad {what} 'data.num_workers=many': .*data\.num_workers.*" + KEYS),
    ("data.rooot=/x", r"^bad {what} 'data.rooot=/x': Key 'rooot' not in 'DataConfig'.*" + KEYS),
    ("data.root=[1,2", r"^{what} 'data.root=\[1,2' is not a valid value \(.*\): quote it or close its brackets"),
    ("=3", r"'=3' is not key=value.*: write e.g. "),
])
def test_the_same_mistake_gets_the_same_line_everywhere(place, item, pattern):
    load, what = PLACES[place]
    with pytest.raises(UserError) as err:
        load([item])
    message = str(err.value)
    assert "\n" not in message
    assert re.search(pattern.format(what=re.escape(what)), message), message


def test_data_items_read_bare_keys_and_shortcuts_alike_for_every_command(tmp_path):
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "manifest.json").write_text("{}")
    items = ["root=/x", "fashion_mnist:/f", str(tmp_path / "shards"), "eval_shards=/t", "eval.image_size=64"]
    expected = ["data.root=/x", "data.source=fashion_mnist", "data.root=/f", "data.source=shards",
                f"data.root={tmp_path / 'shards'}", "data.eval_shards=/t", "eval.image_size=64"]
    assert data_items(items, Config) == data_items(items, FinetuneConfig) == expected
    assert data_items(["method=layerwise"], FinetuneConfig) == ["method=layerwise"]  # a top-level key stays
    assert data_items(["method=layerwise"], Config) == ["data.method=layerwise"]  # not one of Config's
    cfg = eval_config(None, [str(tmp_path / "shards"), "eval_shards=/t"])
    assert (cfg.data.source, cfg.data.root, cfg.data.eval_shards) == ("shards", str(tmp_path / "shards"), "/t")
    with pytest.raises(UserError, match="'/no/such/dir' is not key=value, fashion_mnist.*: write e.g. root="):
        data_items(["/no/such/dir"], Config)


def test_evaluation_data_items_set_only_data_eval_and_augment():
    assert eval_config(None, ["augment.mean=[0.5]", "augment.std=[0.2]"]).augment.mean == [0.5]
    with pytest.raises(UserError, match=r"^bad --data item 'model.depth=3': model cannot be set here \(only data, "
                                        r"eval, augment\); see dinolite/config.py for the keys and types$"):
        eval_config(None, ["model.depth=3"])
