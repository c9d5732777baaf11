"""The fine-tuning recipe, typed overrides, and the run directory's identity."""

import pytest

from dinolite.config import read_saved_config
from dinolite.errors import UserError
from dinolite.finetune.config import FinetuneConfig
from dinolite.finetune.methods import prepare_finetune_dir
from dinolite.finetune.recipe import load_finetune_config


def test_recipe_loads_and_names_its_run_directory():
    cfg = load_finetune_config()
    assert (cfg.recipe, cfg.method, cfg.init, cfg.data.source) == ("finetune_fmnist", "supervised", "runs/quickstart",
                                                                  "fashion_mnist")
    assert cfg.train.output_dir == "runs/finetune_fmnist-supervised"
    ba = load_finetune_config(None, ["method=born-again", "born_again.generations=3", "layerwise.exits=[1,2]"])
    assert ba.train.output_dir == "runs/finetune_fmnist-born-again" and ba.born_again.generations == 3
    assert ba.layerwise.exits == [1, 2]


@pytest.mark.parametrize("override,fragment", [
    ("method=distill", "method must be one of"),
    ("optim.epochz=3", "epochz"),
    ("born_again.alpha=1.5", "born_again.alpha"),
    ("optim.layer_decay=0", "layer_decay"),
    ("init=''", "--init"),
    ("consistency.strength=-1", "strength"),
])
def test_bad_settings_are_one_line_errors(override, fragment):
    with pytest.raises(UserError, match=fragment) as err:
        load_finetune_config(None, [override])
    assert "\n" not in str(err.value)


def test_run_directory_of_another_method_is_refused(tmp_path):
    cfg = load_finetune_config(None, [f"train.output_dir={tmp_path}"])
    prepare_finetune_dir(cfg, True)
    assert read_saved_config(tmp_path / "config.yaml", FinetuneConfig) == cfg
    other = load_finetune_config(None, [f"train.output_dir={tmp_path}", "method=layerwise"])
    with pytest.raises(UserError, match="method 'supervised', not 'layerwise'"):
        prepare_finetune_dir(other, True)
