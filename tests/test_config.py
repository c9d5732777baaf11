"""Typed config loading, and the one-line errors (exit code 2) of the CLI."""

import pytest

from dinolite.cli import main
from dinolite.config import load_config
from dinolite.errors import UserError
from tests.helpers import tiny_overrides


def test_recipes_load_with_their_values():
    q = load_config()
    assert q.recipe == "quickstart" and q.data.source == "fashion_mnist" and q.augment.mean == [0.286]
    v = load_config("vit_small_imagenet")
    assert (v.model.arch, v.model.out_dim, v.augment.local_crops_number) == ("vit_small_patch16_224", 65536, 8)
    assert (v.optim.lr, v.optim.warmup_epochs, v.optim.momentum_teacher) == (0.0005, 10, 0.996)
    assert v.augment.blur_p == [1.0, 0.1, 0.5] and v.loss.center_momentum == 0.9
    r = load_config("resnet50_imagenet")  # facebookresearch/dino README's ResNet-50 command
    assert (r.model.arch, r.optim.optimizer, r.optim.lr, r.optim.batch_size) == ("resnet50", "sgd", 0.03, 512)
    assert (r.optim.weight_decay, r.optim.weight_decay_end) == (1e-4, 1e-4)
    assert r.augment.global_crops_scale == [0.14, 1.0] and r.augment.local_crops_scale == [0.05, 0.14]


def test_overrides_are_typed():
    cfg = load_config(None, ["optim.epochs=3", "augment.local_crops_scale=[0.1,0.3]", "model.norm_last_layer=false"])
    assert cfg.optim.epochs == 3 and cfg.augment.local_crops_scale == [0.1, 0.3]
    assert cfg.model.norm_last_layer is False


@pytest.mark.parametrize("override,fragment", [
    ("optim.epochz=3", "epochz"),
    ("optim.epochs=many", "optim.epochs"),
    ("optim.epochs", "key=value"),
    ("augment.global_crops_scale=[0.5,0.1]", "global_crops_scale"),
    ("optim.warmup_fraction=1.5", "optim.warmup_fraction must be in"),
    ("loss.warmup_teacher_temp_steps=-1", "loss.warmup_teacher_temp_steps must be >= 0"),
    ("loss.warmup_teacher_temp_epochs=-2", "loss.warmup_teacher_temp_epochs must be >= 0"),
    ("train.budget_minutes=-1", "train.budget_minutes"),
    ("optim.total_steps=0", "optim.total_steps must be >= 1"),
    ("eval.online_every=30", "multiple of train.log_every"),
    ("loss.centering=mean", "loss.centering"),
    ("loss.koleo_weight=-0.1", "loss.koleo_weight"),
])
def test_bad_config_is_one_line_error(override, fragment):
    with pytest.raises(UserError, match=fragment) as err:
        load_config(None, [override])
    assert "\n" not in str(err.value)


def run_cli(capsys, *args):
    code = main(["pretrain", "--no-progress", *args])
    captured = capsys.readouterr()
    return code, captured.err.strip()


@pytest.mark.parametrize("override,fragment", [
    ("optim.batch_sizes=8", "batch_sizes"),
    ("optim.batch_size=eight", "optim.batch_size"),
])
def test_cli_rejects_bad_keys_and_types_with_exit_code_2(capsys, override, fragment):
    code, err = run_cli(capsys, override)
    assert code == 2 and err.startswith("dinolite: error:") and fragment in err
    assert "Traceback" not in err and len(err.splitlines()) == 1


def test_cli_missing_data_path(capsys, tmp_path):
    code, err = run_cli(capsys, f"data.root={tmp_path}/no-such-dir", f"train.output_dir={tmp_path}/run")
    assert code == 2 and "no-such-dir" in err and "apt-get install dataset-fashion-mnist" in err
    assert len(err.splitlines()) == 1


def test_cli_missing_config_file(capsys):
    assert run_cli(capsys, "--config", "nope.yaml")[0] == 2


def test_cli_run_dir_of_another_recipe(capsys, tmp_path):
    run = tmp_path / "run"
    code, _ = run_cli(capsys, *tiny_overrides(run, **{"train.stop_after_steps": 1}))
    assert code == 0
    code, err = run_cli(capsys, "--config", "vit_small_imagenet", f"train.output_dir={run}")
    assert code == 2 and "recipe 'quickstart'" in err and len(err.splitlines()) == 1


def test_a_span_in_both_steps_and_fraction_is_refused():
    with pytest.raises(UserError, match="warmup_steps and optim.warmup_fraction are both set: keep one"):
        load_config(None, ["optim.warmup_steps=10", "optim.warmup_fraction=0.1"])


BAD_VALUES = [  # (override, words the one-line message must hold): the cases found by hand, and their kin
    ("optim.epochs=[1,2", "is not a valid value"),
    ("data.num_workers=-1", "data.num_workers must be >= 0"),
    ("train.threads=-1", "train.threads must be >= 0"),
    ("model.patch_size=0", "model.patch_size must be >= 1"),
    ("augment.global_crops_size=5", "at least the patch size (7)"),
    ("data.subset=-5", "data.subset must be >= 0"),
    ("augment.flip_p=2", "augment.flip_p must be a probability"),
    ("augment.jitter_p=-1", "augment.jitter_p must be a probability"),
    ("augment.blur_p=[1.0,0.1,1.5]", "augment.blur_p must be a probability"),
    ("eval.batch_size=0", "eval.batch_size must be >= 1"),
    ("eval.knn_k=0", "eval.knn_k must be >= 1"),
    ("eval.crop_ratio=0", "eval.crop_ratio must be in (0, 1]"),
    ("optim.lr=nan", "optim.lr must be > 0"),
    ("loss.teacher_temp=0", "loss.teacher_temp must be > 0"),
    ("model.embed_dim=130", "multiple of model.num_heads"),
    ("data.max_bad_fraction=1.5", "data.max_bad_fraction must be a probability"),
    ("optim.momentum_teacher=1.2", "optim.momentum_teacher must be a probability"),
]


@pytest.mark.parametrize("override,words", BAD_VALUES)
def test_every_bad_value_is_one_line_before_anything_is_written(capsys, tmp_path, override, words):
    run = tmp_path / "run"
    code, err = run_cli(capsys, f"train.output_dir={run}", override)
    assert code == 2 and len(err.splitlines()) == 1 and words in err, err
    assert not run.exists()


@pytest.mark.parametrize("text,words", [("- a\n- b\n", "holds a YAML list, not a mapping"),
                                        ("optim: {epochs: 3\n", "is not valid YAML"),
                                        ("just a string\n", "not in 'Config'"),
                                        ("optim:\n  epochs: [\n", "is not valid YAML")])
def test_broken_recipe_files_are_one_line(capsys, tmp_path, text, words):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    code, err = run_cli(capsys, "--config", str(recipe), f"train.output_dir={tmp_path / 'run'}")
    assert code == 2 and len(err.splitlines()) == 1 and words in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("override,words", [("data.num_workers=-1", "data.num_workers must be >= 0"),
                                            ("train.threads=-1", "train.threads must be >= 0"),
                                            ("data.subset=-5", "data.subset must be >= 0"),
                                            ("augment.flip_p=2", "augment.flip_p must be a probability"),
                                            ("data.max_bad_fraction=-0.1", "data.max_bad_fraction must be a probability")])
def test_finetuning_checks_the_shared_keys_the_same_way(capsys, tmp_path, override, words):
    code = main(["finetune", "--init", "timm:vit_tiny_patch16_224", f"train.output_dir={tmp_path / 'run'}", override])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and words in err, err
    assert not (tmp_path / "run").exists()


def test_fractional_warmup_epochs_are_accepted_by_both_tasks():
    """Found by hand: optim.warmup_epochs=0.5 was refused by pretraining and accepted by fine-tuning."""
    from dinolite.finetune.recipe import load_finetune_config

    assert load_config(None, ["optim.warmup_epochs=0.5"]).optim.warmup_epochs == 0.5
    assert load_finetune_config(None, ["init=timm:vit_tiny_patch16_224", "optim.warmup_epochs=0.5"]).optim.warmup_epochs == 0.5
    for load in (lambda o: load_config(None, o), lambda o: load_finetune_config(None, ["init=x", *o])):
        with pytest.raises(UserError, match="optim.warmup_epochs must be >= 0"):
            load(["optim.warmup_epochs=-0.5"])


def test_both_tasks_train_sections_hold_every_engine_setting():
    """``EngineConfig`` is the one place for the engine's settings: both ``train`` sections inherit every field
    (same type, and same default but for the run directory), and an override or an unknown key of the
    ``train`` section works the same in both tasks."""
    from dataclasses import fields

    from dinolite.config import Config, EngineConfig
    from dinolite.finetune.config import FinetuneConfig
    from dinolite.finetune.recipe import load_finetune_config

    engine = {f.name: f for f in fields(EngineConfig)}
    assert {"seed", "device", "log_every", "checkpoint_every_minutes", "loggers", "stop_after_steps"} <= set(engine)
    for cfg in (Config(), FinetuneConfig()):
        assert isinstance(cfg.train, EngineConfig)
        own = {f.name: f for f in fields(cfg.train)}
        assert set(engine) <= set(own), type(cfg.train).__name__
        assert all(own[k].type == f.type for k, f in engine.items())
        assert all(getattr(cfg.train, k) == getattr(EngineConfig(), k) for k in engine if k != "output_dir")
    loads = (lambda o: load_config(None, o), lambda o: load_finetune_config(None, ["init=x", *o]))
    for load in loads:
        assert load(["train.seed=3", "train.loggers=[jsonl,tensorboard]"]).train.seed == 3
        with pytest.raises(UserError, match="seedz"):
            load(["train.seedz=3"])
        with pytest.raises(UserError, match="train.keep_checkpoints must be >= 1"):  # checks.train_checks, for both
            load(["train.keep_checkpoints=0"])
    with pytest.raises(UserError, match="budget_minutes"):  # pretraining's own keys stay its own
        loads[1](["train.budget_minutes=5"])


# ---- what the user types wins: a typed run length over the recipe's time budget (issue 24, item 4) --------

def test_a_typed_length_replaces_the_recipes_budget_and_says_so():
    from dinolite.config import command_line_length

    assert load_config(None, ["optim.epochs=10"]).train.budget_minutes == 10  # merged as given, without the rule
    cfg = load_config(None, ["optim.epochs=10"], command_line=True)
    assert (cfg.train.budget_minutes, cfg.optim.epochs, cfg.optim.total_steps) == (0, 10, None)
    cfg = load_config(None, ["optim.total_steps=500"], command_line=True)
    assert (cfg.train.budget_minutes, cfg.optim.total_steps) == (0, 500)
    cfg = load_config(None, ["optim={epochs: 3, batch_size: 64}"], command_line=True)  # a mapping sets its keys
    assert (cfg.train.budget_minutes, cfg.optim.epochs) == (0, 3)
    typed = ["optim.epochs=10", "train.output_dir=runs/x"]
    cfg = load_config(None, typed)
    note = command_line_length(cfg, typed)
    assert note == ("run length: optim.epochs=10 from the command line "
                    "(the recipe's train.budget_minutes=10 is not used)") and cfg.train.budget_minutes == 0


def test_a_typed_epoch_count_also_replaces_a_recipes_step_count(tmp_path):
    from dinolite.config import command_line_length

    recipe = tmp_path / "steps.yaml"
    recipe.write_text("data: {source: fashion_mnist, root: /usr/share/datasets/fashion-mnist}\n"
                      "optim: {total_steps: 300}\ntrain: {budget_minutes: 5}\n")
    cfg = load_config(str(recipe), ["optim.epochs=2"])
    assert cfg.optim.total_steps == 300 and cfg.train.budget_minutes == 5  # merged as given: the recipe's win
    note = command_line_length(cfg, ["optim.epochs=2"])
    assert (cfg.optim.total_steps, cfg.optim.epochs, cfg.train.budget_minutes) == (None, 2, 0)
    assert "train.budget_minutes=5 and optim.total_steps=300 are not used" in note


@pytest.mark.parametrize("typed", [[], ["train.budget_minutes=3"], ["train.budget_minutes=0", "optim.epochs=2"],
                                   ["optim.total_steps=null", "train.budget_minutes=3"], ["optim.lr=0.001"]])
def test_the_recipes_length_stands_when_no_length_is_typed_against_it(typed):
    """No typed length, a typed budget alone, a typed length beside a typed budget of 0, or a step count typed
    away (null): nothing to replace and nothing to say. A resumed budget run passes the same overrides, so it
    still plans by its budget (and adopts its saved step count: tests/test_budget.py)."""
    from dinolite.config import command_line_length

    plain = load_config(None, typed)
    cfg = load_config(None, typed)
    assert command_line_length(cfg, typed) == "" and cfg == plain


@pytest.mark.parametrize("typed", [["train.budget_minutes=5", "optim.epochs=3"],
                                   ["optim.total_steps=100", "train.budget_minutes=0.5"],
                                   ["train={budget_minutes: 5}", "optim={total_steps: 100}"]])
def test_a_typed_budget_beside_a_typed_length_is_one_line(typed):
    with pytest.raises(UserError) as err:
        load_config(None, typed, command_line=True)
    msg = str(err.value)
    assert "\n" not in msg and "train.budget_minutes=" in msg and "keep one" in msg
    assert ("optim.epochs=3" in msg) != ("optim.total_steps=100" in msg)


def test_every_entry_point_refuses_a_budget_beside_a_length_before_writing(capsys, tmp_path):
    """The CLI and the SLURM launcher: exit 2, one line naming both keys, no run directory; DINOTrainer: the error."""
    from dinolite.pretraining.library import DINOTrainer
    from launch.slurm import main as slurm_main

    run = tmp_path / "run"
    code, err = run_cli(capsys, f"train.output_dir={run}", "train.budget_minutes=5", "optim.epochs=3")
    assert code == 2 and len(err.splitlines()) == 1 and "train.budget_minutes=5 and optim.epochs=3" in err
    assert slurm_main(["--local", f"train.output_dir={run}", "optim.total_steps=9", "train.budget_minutes=5"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "optim.total_steps=9" in err and "keep one" in err
    assert not run.exists()
    with pytest.raises(UserError, match="keep one"):
        DINOTrainer("quickstart", ["optim.total_steps=9", "train.budget_minutes=5"], in_chans=1, device="cpu")
    trainer = DINOTrainer("quickstart", ["optim.total_steps=9", "model.depth=1"], in_chans=1, device="cpu")
    assert trainer.cfg.train.budget_minutes == 0 and trainer.cfg.optim.total_steps == 9


def test_the_cli_runs_the_typed_length_says_so_and_resumes_it(capsys, tmp_path):
    """`dinolite pretrain optim.epochs=2 ...` on the quickstart (10-minute budget): the note first, then the
    epochs' steps; the same command line resumes the run to the same length."""
    from omegaconf import OmegaConf

    run = tmp_path / "run"
    typed = [o for o in tiny_overrides(run, **{"data.subset": 64, "eval.knn_at_end": False})
             if not o.startswith("train.budget_minutes=")]  # the quickstart's budget, not typed
    assert "optim.epochs=2" in typed and load_config(None, typed).train.budget_minutes == 10
    assert main(["pretrain", "--no-progress", *typed, "train.stop_after_steps=2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == ("run length: optim.epochs=2 from the command line "
                      "(the recipe's train.budget_minutes=10 is not used)")
    assert not any(line.startswith("time budget") for line in out)
    assert any(line.startswith("training 4 steps") for line in out), out  # 2 epochs of 64 images, batch 32
    saved = OmegaConf.load(run / "config.yaml")
    assert saved.train.budget_minutes == 0 and saved.optim.epochs == 2
    assert main(["pretrain", "--no-progress", *typed]) == 0
    out = capsys.readouterr().out
    assert "resumed at step 2" in out and "finished at step 4/4" in out
