"""Real CPU runs of the four methods on a Fashion-MNIST subset: tables, budgets, generations, resume."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dinolite.engine import checkpoint as ckpt
from dinolite.finetune.methods import context as methods  # Context.build calls build_model
from dinolite.finetune.methods import finetune
from dinolite.finetune.trainer import LOGITS_FILE, load_logits
from tests.finetune.helpers import ft_config, write_tiny_backbone

METHOD_EXTRA = {"layerwise": {"layerwise.hint_weight": 0.1, "layerwise.exits": "[1,3]"}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One finished run per method (8 steps per model), and every model built along the way."""
    root = tmp_path_factory.mktemp("finetune")
    init = write_tiny_backbone(root / "backbone.safetensors")
    built = []
    real_build = methods.build_model

    def recording_build(*args, **kwargs):
        model = real_build(*args, **kwargs)
        built.append({k: v.clone() for k, v in model.state_dict().items()})
        return model

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(methods, "build_model", recording_build)
        results, builds = {}, {}
        for method in ("supervised", "born-again", "layerwise", "consistency"):
            built.clear()
            results[method] = finetune(ft_config(root / method, init, method, **METHOD_EXTRA.get(method, {})),
                                       progress=False)
            builds[method] = list(built)
    return {"root": root, "init": init, "results": results, "builds": builds}


def test_every_method_writes_its_table_with_the_same_budget(runs):
    for method, res in runs["results"].items():
        run = runs["root"] / method
        saved = json.loads((run / "results.json").read_text())
        assert saved == json.loads(json.dumps(res))
        assert saved["steps_per_model"] == 8 and saved["train_images"] == 512 and saved["test_images"] == 256
        md = (run / "results.md").read_text()
        assert md.startswith(f"# dinolite finetune --method {method}") and "| model | test top-1 (%) |" in md
        assert all(0 <= r["top1"] <= 100 for r in saved["rows"])
        # the optimiser really took that many steps in each model
        for model_dir in ([run / "gen0", run / "gen1"] if method == "born-again" else [run]):
            assert ckpt.latest_valid(model_dir)[1]["step"] == 8
    ba = runs["results"]["born-again"]
    assert ba["models_trained"] == 2 and ba["total_steps"] == 16
    assert [r["model"] for r in ba["rows"]] == ["generation 0", "generation 1", "ensemble of generations 0-1"]


def test_generation_k_starts_fresh_from_the_init_weights(runs):
    init = load_file(str(runs["init"]))
    gen0_final = load_file(str(runs["root"] / "born-again" / "gen0" / "model.safetensors"))
    starts = runs["builds"]["born-again"]  # gen 0 student, gen 1 student (teachers are rebuilt, not built)
    assert len(starts) == 2
    gen1 = starts[1]
    for name, value in init.items():
        assert torch.equal(gen1["vit." + name], value), name  # the init backbone, not generation 0's weights
    moved = [n for n in init if not torch.equal(gen0_final["vit." + n], init[n])]
    assert len(moved) > len(init) // 2  # generation 0 did train, so "fresh" is a real difference
    assert not torch.equal(gen1["vit.head.weight"], gen0_final["vit.head.weight"])


def test_born_again_ensemble_averages_the_generations(runs):
    run = runs["root"] / "born-again"
    (g0, labels), (g1, _) = load_logits(run / "gen0" / LOGITS_FILE), load_logits(run / "gen1" / LOGITS_FILE)

    def softmax(z):
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    probs = (softmax(g0[-1].double().numpy()) + softmax(g1[-1].double().numpy())) / 2
    rows = {r["model"]: r["top1"] for r in runs["results"]["born-again"]["rows"]}
    assert rows["ensemble of generations 0-1"] == pytest.approx(np.mean(probs.argmax(1) == labels.numpy()) * 100)
    assert rows["generation 1"] == pytest.approx(np.mean(g1[-1].numpy().argmax(1) == labels.numpy()) * 100)


def test_layerwise_table_comes_from_the_per_exit_predictions(runs):
    res = runs["results"]["layerwise"]
    logits, labels = load_logits(runs["root"] / "layerwise" / LOGITS_FILE)
    assert len(logits) == 3  # exits after blocks 1 and 3, and the final classifier
    y = labels.numpy()
    probs = [np.exp(z.double().numpy()) / np.exp(z.double().numpy()).sum(1, keepdims=True) for z in logits]
    rows = {r["model"]: r for r in res["rows"]}
    assert rows["exit after block 1/4"]["top1"] == pytest.approx(np.mean(probs[0].argmax(1) == y) * 100)
    assert rows["exit after block 3/4"]["top1"] == pytest.approx(np.mean(probs[1].argmax(1) == y) * 100)
    assert rows["final classifier (block 4/4)"]["top1"] == pytest.approx(np.mean(probs[2].argmax(1) == y) * 100)
    assert rows["ensemble of the 3 exits"]["top1"] == pytest.approx(np.mean(np.mean(probs, 0).argmax(1) == y) * 100)
    for t in (0.8, 0.9, 0.95):
        exit_of = np.array([next((k for k in range(2) if probs[k][i].max() >= t), 2) for i in range(len(y))])
        pred = np.array([probs[k][i].argmax() for i, k in enumerate(exit_of)])
        row = rows[f"early exit, confidence >= {t:g}"]
        assert row["top1"] == pytest.approx(np.mean(pred == y) * 100)
        assert row["avg_depth"] == pytest.approx(np.mean(np.array([1, 3, 4])[exit_of]))


def test_born_again_resumes_mid_generation_exactly(runs, tmp_path):
    cfg_stop = ft_config(tmp_path / "ba", runs["init"], "born-again", **{"train.stop_after_steps": 12})
    assert finetune(cfg_stop, progress=False) is None
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "ba" / "gen1")] == ["checkpoint-00000004.pt"]
    assert not (tmp_path / "ba" / "results.md").exists() and not (tmp_path / "ba" / "gen1" / "model.safetensors").exists()
    resumed = finetune(ft_config(tmp_path / "ba", runs["init"], "born-again"), progress=False)
    assert resumed["rows"] == runs["results"]["born-again"]["rows"]
    a = load_file(str(tmp_path / "ba" / "gen1" / "model.safetensors"))
    b = load_file(str(runs["root"] / "born-again" / "gen1" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in b)
    # a finished run only rebuilds its tables
    assert finetune(ft_config(tmp_path / "ba", runs["init"], "born-again"), progress=False)["rows"] == resumed["rows"]


def test_a_finished_supervised_run_can_be_generation_0(runs, tmp_path):
    """born_again.teacher = the supervised run: the same gen 0 (same seed and budget), so the same gen 1."""
    cfg = ft_config(tmp_path / "ba", runs["init"], "born-again", **{"born_again.teacher": str(runs["root"] / "supervised")})
    res = finetune(cfg, progress=False)
    assert res["models_trained"] == 1 and res["total_steps"] == 8
    full = runs["results"]["born-again"]["rows"]
    assert [r["top1"] for r in res["rows"]] == [r["top1"] for r in full]
    sup_logits, _ = load_logits(runs["root"] / "supervised" / LOGITS_FILE)
    gen0_logits, _ = load_logits(tmp_path / "ba" / "gen0" / LOGITS_FILE)
    assert torch.equal(sup_logits[-1], gen0_logits[-1])


def test_cli_runs_and_refuses_exit_blocks_outside_the_depth(runs, tmp_path, capsys):
    from dinolite.cli import main
    from tests.finetune.helpers import ft_overrides

    args = ft_overrides(tmp_path / "lw", runs["init"], "layerwise", **{"layerwise.exits": "[2,4]"})
    assert main(["finetune", "--no-progress", "--data", "fashion_mnist", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert "layerwise.exits=[2, 4]: block 4 is outside the backbone's depth (4 blocks)" in err and "1..3" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "lw").exists()  # nothing written, not even config.yaml
    args = ft_overrides(tmp_path / "sup", runs["init"], **{"optim.epochs": 1})
    assert main(["finetune", "--no-progress", "--method", "consistency", *args]) == 0
    assert "| final classifier (block 4/4) |" in capsys.readouterr().out
    assert (tmp_path / "sup" / "results.md").is_file() and (tmp_path / "sup" / "model.safetensors").is_file()


def test_epoch_lines_name_the_exit_of_each_figure(runs, tmp_path, capsys):
    from dinolite.cli import main
    from tests.finetune.helpers import ft_overrides

    args = ft_overrides(tmp_path / "lw", runs["init"], "layerwise", **{"layerwise.exits": "[1,3]"})
    assert main(["finetune", *args]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "epoch 1: test top-1" in line]
    assert lines and all("block 1 " in line and "block 3 " in line and "final " in line for line in lines), lines
