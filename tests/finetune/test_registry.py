"""The method registry drives the config check, the CLI's ``--method`` choices, the resume check and the run:
a method registered in a test is refused before and accepted, listed and run like the shipped ones after;
``finetune``'s ``setup`` hook sees every trainer before its first step."""

import pytest

from dinolite.cli import parse
from dinolite.errors import UserError
from dinolite.finetune.methods import METHODS, SingleModel, finetune
from dinolite.finetune.objectives import Supervised
from dinolite.finetune.recipe import load_finetune_config
from dinolite.finetune.tables import single_rows
from tests.finetune.helpers import ft_config, write_tiny_backbone


class EchoMethod(SingleModel):
    """A test method: supervised training, its own check, resume-fixed key and table note."""

    name = "echo"
    fixed_on_resume = ("optim.label_smoothing",)

    @classmethod
    def checks(cls, cfg):
        return [(cfg.optim.label_smoothing < 0.5, "echo: optim.label_smoothing must be < 0.5")]

    def objective(self, ctx, model):
        return Supervised(ctx.cfg.optim.label_smoothing)

    def rows(self, ctx, logits, labels):
        return single_rows(logits, labels, ctx.init.depth, "echo")


@pytest.fixture
def echo(monkeypatch):
    monkeypatch.setitem(METHODS, EchoMethod.name, EchoMethod)


def help_text(capsys) -> str:
    with pytest.raises(SystemExit):
        parse(["finetune", "--help"])
    return capsys.readouterr().out


def test_the_shipped_methods_are_registered_under_their_names(capsys):
    assert list(METHODS) == ["supervised", "born-again", "layerwise", "consistency"]
    assert all(name == method.name for name, method in METHODS.items())
    assert "supervised, born-again, layerwise, consistency" in " ".join(help_text(capsys).split())


def test_an_unregistered_method_is_refused_by_the_config_and_the_cli(capsys):
    with pytest.raises(UserError, match="method must be one of supervised, born-again, layerwise, consistency"):
        load_finetune_config(None, ["init=x", "method=echo"])
    with pytest.raises(SystemExit):
        parse(["finetune", "--method", "echo"])
    assert "invalid choice: 'echo'" in capsys.readouterr().err


def test_a_registered_method_is_checked_offered_resumed_and_run(echo, tmp_path, capsys):
    assert parse(["finetune", "--method", "echo"]).method == "echo" and "echo" in help_text(capsys)
    with pytest.raises(UserError, match="echo: optim.label_smoothing must be < 0.5"):  # whichever method is chosen
        load_finetune_config(None, ["init=x", "optim.label_smoothing=0.6"])
    init = write_tiny_backbone(tmp_path / "backbone.safetensors")
    seen = []

    def setup(trainer):
        seen.append((trainer.out_dir, trainer.step))

    run = tmp_path / "run"
    assert finetune(ft_config(run, init, "echo", **{"train.stop_after_steps": 4}), progress=False, setup=setup) is None
    with pytest.raises(UserError, match="optim.label_smoothing 0.0 -> 0.1"):  # the method's fixed key
        finetune(ft_config(run, init, "echo", **{"optim.label_smoothing": 0.1}), progress=False)
    res = finetune(ft_config(run, init, "echo"), progress=False, setup=setup)
    assert seen == [(run, 0), (run, 4)]  # each trainer before its first step (the second one resumed)
    assert res["method"] == "echo" and [r["note"] for r in res["rows"]] == ["echo"]
    assert res["top1"] == res["rows"][0]["top1"] and (run / "results.md").read_text().startswith(
        "# dinolite finetune --method echo")


def test_setup_sees_every_born_again_generation(tmp_path):
    init = write_tiny_backbone(tmp_path / "backbone.safetensors")
    seen = []
    finetune(ft_config(tmp_path / "ba", init, "born-again"), progress=False,
             setup=lambda trainer: seen.append((trainer.out_dir.name, trainer.step)))
    assert seen == [("gen0", 0), ("gen1", 0)]
