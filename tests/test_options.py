"""Each dinov2-era option and a CNN backbone through the CLI: pretrain, k-NN, export, plain timm load."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import timm
import torch
from PIL import Image

from dinolite.cli import main
from dinolite.engine import checkpoint as ckpt
from dinolite.weights import resolve
from tests.helpers import tiny_overrides

CNN = {"model.arch": "resnet10t", "model.patch_size": "null", "model.embed_dim": "null", "model.depth": "null",
       "model.num_heads": "null", "loss.ibot_weight": 0}  # iBOT needs patch tokens; the quickstart has it on
VARIANTS = {
    "ibot": {"loss.ibot_weight": 1.0, "loss.ibot_mask_probability": 0.7},
    "ibot-separate-head-sinkhorn": {"loss.ibot_weight": 1.0, "loss.ibot_separate_head": True,
                                    "loss.centering": "sinkhorn_knopp", "loss.koleo_weight": 0.1},
    "registers": {"model.reg_tokens": 2},
    "resnet": CNN,
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Callable[[str], Path]:
    """The tiny pretraining run of a variant, made on first use and shared by the module's tests: a test that
    applies to some variants only asks for those (no case is generated for the others), and each run is made
    once whichever tests ask for it."""
    made: dict[str, Path] = {}

    def run_of(name: str) -> Path:
        if name not in made:
            run = tmp_path_factory.mktemp(name) / "run"
            assert main(["pretrain", "--no-progress", *tiny_overrides(run, **VARIANTS[name])]) == 0
            made[name] = run
        return made[name]

    return run_of


@pytest.fixture(params=list(VARIANTS))
def option_run(request, runs):
    return request.param, runs(request.param)


def test_option_pretrains_and_scores(option_run, capsys):
    name, run = option_run
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 8 and all(map(torch.isfinite, torch.tensor(losses)))
    assert 0 <= [r for r in rows if "knn_top1" in r][-1]["knn_top1"] <= 100
    state = ckpt.latest_valid(run)[1]
    if name.startswith("ibot"):
        assert "ibot_loss" in state and state["ibot_loss"]["center"].abs().sum() > 0  # the patch center moved
        assert "mask_token" in state["student"] and state["student"]["mask_token"].abs().sum() > 0  # and learned
        assert ("patch_head.last_layer.parametrizations.weight.original1" in state["student"]) == ("separate" in name)
        assert all("loss_ibot" in r and "loss_koleo" in r for r in rows if "loss" in r)  # each term is logged
    assert main(["knn", str(run)]) == 0
    assert re.search(r"\d+\.\d+", capsys.readouterr().out)


def test_option_exports_to_plain_timm(option_run, tmp_path):
    name, run = option_run
    out = tmp_path / "export"
    assert main(["export", str(run), "--out", str(out)]) == 0
    info = json.loads((out / "config.json").read_text())
    model = timm.create_model(info["timm_model"], pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(out / "model.safetensors")), **info["timm_kwargs"]).eval()
    assert ("reg_tokens" in info["timm_kwargs"]) == (name == "registers")
    assert (type(model).__name__ == "ResNet") == (name == "resnet")
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(x), resolve(run).build()(x))
    if name == "registers":
        assert model.num_prefix_tokens == 3


def attention(run: Path, tmp_path: Path) -> int:
    """``dinolite attention`` of ``run`` on a random 28-pixel image; its exit code."""
    image = tmp_path / "x.png"
    Image.fromarray((torch.rand(28, 28) * 255).byte().numpy()).save(image)
    return main(["attention", str(run), str(image), "--out", str(tmp_path / "a.png")])


def test_attention_maps_leave_the_registers_out(runs, tmp_path, capsys):
    """2 heads over the 4 x 4 patches: the CLS and the 2 registers are not in the map."""
    assert attention(runs("registers"), tmp_path) == 0
    assert "2 heads (4x4 patches)" in capsys.readouterr().out


def test_attention_maps_need_a_vit(runs, tmp_path, capsys):
    assert attention(runs("resnet"), tmp_path) == 2 and not (tmp_path / "a.png").exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "need a ViT" in err[0]


def test_cnn_linear_probe_and_finetuning(runs, tmp_path, capsys):
    run = runs("resnet")
    assert main(["linear", str(run), "--mode", "fast", "--epochs", "2"]) == 0
    assert "pooled features" in capsys.readouterr().out
    from tests.finetune.helpers import ft_overrides

    ft = tmp_path / "ft"
    assert main(["finetune", *ft_overrides(ft, run, "supervised", **{"data.subset": 256, "data.test_subset": 128})]) == 0
    assert json.loads((ft / "results.json").read_text())
    assert main(["finetune", *ft_overrides(tmp_path / "lw", run, "layerwise")]) == 2
    assert "not a ViT" in capsys.readouterr().err


def test_resume_with_ibot_switched_is_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", "--no-progress", *tiny_overrides(run, **{"train.stop_after_steps": 2, "loss.ibot_weight": 0})]) == 0
    capsys.readouterr()
    assert main(["pretrain", "--no-progress", *tiny_overrides(run, **{"loss.ibot_weight": 1.0})]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trained with iBOT off" in err[0]


def test_the_monitor_reads_the_centred_softmax_under_sinkhorn_knopp(tmp_path, monkeypatch):
    """Sinkhorn-Knopp targets have a uniform mean by construction (KL 0 once balanced), which the monitor would
    read as a uniform collapse (the options benchmark showed it); its statistics come from the centred softmax."""
    import dinolite.methods.dino as dino
    import dinolite.pretraining.train as train
    from dinolite.maths.loss import teacher_stats
    from tests.helpers import tiny_config

    calls = []

    def spy(*args, **kwargs):
        calls.append((args[3:], kwargs))
        return teacher_stats(*args, **kwargs)

    monkeypatch.setattr(dino, "teacher_stats", spy)  # DINOMethod.teacher_figures, every step: the monitor's input
    cfg = tiny_config(tmp_path, **{"loss.centering": "sinkhorn_knopp", "optim.epochs": 1, "eval.knn_at_end": False})
    train.pretrain(cfg, progress=False)
    assert len(calls) == 4 and all(extra == () and kwargs.get("centering", "center") == "center" for extra, kwargs in calls)
