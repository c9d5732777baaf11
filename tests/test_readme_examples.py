"""The README's example commands do what their comments say, checked on the resolved config without training.

The commands are read from the code lines of README.md (and the pretraining commands of docs/*.md): every
``dinolite ...`` and ``python -m launch.slurm ...`` there, joined over ``\\`` continuations, split at
``&&``, with the ``# comment`` that follows it. Each one must parse with the real command-line parser;
each pretraining command must resolve (recipe, overrides and the rule that a typed run length wins,
``config.command_line_length``) to the run length its command line asks for; and each comment is either
checked (``PROMISES``) or listed with the reason it cannot be checked here (``UNCHECKED``). A new comment,
or a listed one that is gone, fails the test, so the two lists stay the README's.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from dinolite.config import Config, load_config, typed_values
from dinolite.maths.schedules import Plan

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
FMNIST_TRAIN = 60_000  # Fashion-MNIST's training split, the quickstart's data


@dataclass(frozen=True)
class Example:
    """One example command: where it is, its words, its comment and the paragraph line above its block."""

    where: str
    argv: list[str]
    comment: str | None
    heading: str

    @property
    def pretrain(self) -> bool:
        """A pretraining run: ``dinolite pretrain`` or the SLURM launcher's default (or named) pretrain kind."""
        from dinolite.jobs import DEFAULT_KIND, JOB_KINDS

        if self.argv[:2] == ["dinolite", "pretrain"]:
            return True
        if self.argv[:3] != ["python", "-m", "launch.slurm"]:
            return False
        kind = self.argv[3] if len(self.argv) > 3 and self.argv[3] in JOB_KINDS else DEFAULT_KIND
        return kind == "pretrain"


def examples(path: Path) -> list[Example]:
    """The example commands of the code lines (4-space indented) of a Markdown file."""
    lines = path.read_text().splitlines()
    found: list[Example] = []
    heading = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.startswith("    "):
            if line.strip():
                heading = line.strip()
            i += 1
            continue
        start = i
        parts = re.split(r"\s+#\s+", line.strip(), maxsplit=1)
        text, comment = parts[0], (parts[1] if len(parts) > 1 else None)
        while text.endswith("\\") and i + 1 < len(lines):  # a command continued on the next line
            i += 1
            more = re.split(r"\s+#\s+", lines[i].strip(), maxsplit=1)
            text = text[:-1].rstrip() + " " + more[0]
            comment = more[1] if len(more) > 1 else comment
        i += 1
        for segment in text.split("&&"):
            segment = segment.strip()
            if segment.startswith("dinolite ") or segment == "dinolite" or segment.startswith("python -m launch.slurm"):
                found.append(Example(f"{path.name}:{start + 1}", shlex.split(segment), comment, heading))
    return found


README_EXAMPLES = examples(README)
DOC_PRETRAIN_EXAMPLES = [e for doc in DOCS for e in examples(doc) if e.pretrain]


def parse(example: Example):
    """The example's arguments as its own command's parser reads them (``config``, ``overrides``, its flags)."""
    if example.argv[0] == "dinolite":
        from dinolite.cli import parse as parse_cli

        return parse_cli(example.argv[1:])
    from launch.slurm import parse as parse_slurm

    return parse_slurm(example.argv[3:])[1]


# Keys naming input weights that the config checks exist: the reader's own files (an earlier run, a downloaded
# checkpoint). Their values are replaced by an existing stand-in path, which changes nothing else in the config.
INPUTS = ("model.init", "distill.teacher")


def with_stand_ins(overrides: list[str], stand_in: Path) -> list[str]:
    """``overrides`` with every input-weights key pointing at ``stand_in``."""
    return [f"{o.split('=', 1)[0]}={stand_in}" if o.split("=", 1)[0] in INPUTS else o for o in overrides]


def resolve(example: Example, stand_in: Path) -> Config:
    """The config a pretraining example runs with: its recipe and overrides, a typed length winning (as
    ``dinolite pretrain`` and the SLURM launcher resolve it)."""
    args = parse(example)
    return load_config(args.config, with_stand_ins(args.overrides, stand_in), command_line=True)


def quickstart_plan() -> tuple[int, float]:
    """The quickstart's own run length as the README shows it: its sample 'N steps planned (E epochs)' line."""
    found = re.search(r"(\d+) steps planned \(([\d.]+) epochs\)", README.read_text())
    assert found, "README.md no longer shows the quickstart's planned steps: update quickstart_plan()"
    return int(found[1]), float(found[2])


def run_steps(cfg: Config, images: int) -> int:
    """The steps a run of ``cfg`` without a budget trains on ``images`` images (one process)."""
    assert not cfg.train.budget_minutes, "a budget run's steps are fixed when it starts, on the machine at hand"
    return Plan.of(cfg.optim, cfg.loss, images // cfg.optim.batch_size).total


def quickstart_longer(example: Example, stand_in: Path) -> None:
    """'the quickstart, longer': the quickstart recipe, run by epochs (not its budget), for more epochs than
    the README's quickstart run plans."""
    cfg = resolve(example, stand_in)
    steps, epochs = quickstart_plan()
    assert cfg.recipe == "quickstart" and cfg.train.budget_minutes == 0 and cfg.optim.total_steps is None
    assert cfg.optim.epochs > epochs and run_steps(cfg, FMNIST_TRAIN) > steps


def tensorboard_logger(example: Example, stand_in: Path) -> None:
    """'event files in <run>/tensorboard': the TensorBoard sink is on (dinolite/loggers.py writes there)."""
    cfg = resolve(example, stand_in)
    assert "tensorboard" in cfg.train.loggers and "jsonl" in cfg.train.loggers


def wandb_offline(example: Example, stand_in: Path) -> None:
    """'a W&B run in <run>/wandb, offline': the W&B sink is on, offline."""
    cfg = resolve(example, stand_in)
    assert "wandb" in cfg.train.loggers and cfg.train.wandb_mode == "offline"


def finetune_defaults(example: Example, stand_in: Path) -> None:
    """'default recipe configs/finetune_fmnist.yaml: --init runs/quickstart' (the pretraining run's directory)."""
    from dinolite.finetune.recipe import load_finetune_config

    args = parse(example)
    cfg = load_finetune_config(args.config, [f"method={args.method}"])
    assert cfg.recipe == "finetune_fmnist" and cfg.init == "runs/quickstart" and args.init is None


def distill_recipe(example: Example, stand_in: Path) -> None:
    """'configs/distill_fmnist.yaml: a half-size ViT and a ResNet-10t, 10 min': the distillation recipe, resolved
    as ``dinolite distill`` does, with a ViT student of half the quickstart's width and depth, a ResNet-10t and a
    10-minute budget."""
    from dinolite.config import load_distill_config

    args = parse(example)
    cfg = load_distill_config(args.config, with_stand_ins([*args.overrides, f"distill.teacher={args.teacher}"],
                                                          stand_in))
    quick = load_config("quickstart").model
    vit, cnn = cfg.distill.students
    assert cfg.recipe == "distill_fmnist" and cfg.train.budget_minutes == 10 and cnn.arch == "resnet10t"
    assert vit.arch.startswith("vit_") and (2 * vit.embed_dim, 2 * vit.depth) == (quick.embed_dim, quick.depth)


# comment -> its check (it resolves the example itself, inputs replaced by the stand-in)
PROMISES: dict[str, Callable[[Example, Path], None]] = {
    "the quickstart, longer": quickstart_longer,
    "event files in <run>/tensorboard": tensorboard_logger,
    "a W&B run in <run>/wandb, offline": wandb_offline,
    "default recipe configs/finetune_fmnist.yaml: --init runs/quickstart": finetune_defaults,
    "configs/distill_fmnist.yaml: a half-size ViT and a ResNet-10t, 10 min": distill_recipe,
}

# comment -> why this test cannot check it (each command still has to parse)
UNCHECKED = {
    "config.json + model.safetensors": "a Hugging Face folder is written and read by tests/layouts (test_source.py, "
                                       "test_hf_export.py); the run length is checked as every pretraining example's",
    "bare timm weights: 64-dim heads": "bare timm weights are read by tests/layouts/test_source.py; the run length "
                                       "is checked as every pretraining example's",
    "a dinolite run or checkpoint": "what model.init reads needs an earlier run (tests/test_warmstart.py); the "
                                    "example's run length is checked as every pretraining example's",
    "or: fashion_mnist[:ROOT] --split train|test":
        "another form of `dinolite shards`, not a run; tests/helpers.write_shards runs it (tests/data)",
    "weighted k-NN, k = 10/20/100/200, top-1/top-5; features cached":
        "needs a finished run directory; tests/eval/test_knn* score runs",
    "the same on raw pixels (same view and normalisation)": "needs a finished run directory; tests/eval",
    "the online k-NN's subset": "needs a finished run directory; tests/eval",
    "linear probe: LR sweep on cached features (--mode protocol: DINO's)": "needs a finished run; tests/eval",
    'timm hub layout: timm.create_model("local-dir:exports/qs") (--onnx too)': "needs a run; tests/test_export.py",
    "+ model.onnx, dynamic batch (pip install 'dinolite[onnx]')": "needs a run and onnx; tests/test_export.py",
    "runs/quickstart/curves.png": "needs a finished run's metrics; tests/test_viz.py",
    "official DINO checkpoints load too": "needs the official checkpoint file (a download); tests/test_export.py "
                                          "loads a file of the same layout",
    "generations 0..G-1, k distilled from k-1": "what born-again trains, not a setting; tests/finetune",
    "exits after blocks 1/4, 1/2, 3/4 of the depth": "what layerwise builds, not a setting; tests/finetune",
}


def _id(example: Example) -> str:
    return f"{example.where} {' '.join(example.argv[:3])}"


@pytest.mark.parametrize("example", README_EXAMPLES, ids=_id)
def test_every_readme_command_parses(example):
    """Every README command has only options and keys its command knows (argparse would exit 2 otherwise)."""
    parse(example)


@pytest.mark.parametrize("example", [e for e in README_EXAMPLES + DOC_PRETRAIN_EXAMPLES if e.pretrain], ids=_id)
def test_pretraining_examples_run_the_length_their_command_line_asks_for(example, tmp_path):
    """Resolved without training: a typed optim.epochs / optim.total_steps is the run's length (no budget),
    a typed budget is the budget, and otherwise the recipe's own length runs; a commented example also
    keeps its comment's promise."""
    args = parse(example)
    cfg = resolve(example, tmp_path)
    typed = typed_values(args.overrides)
    if typed.get("optim.total_steps") is not None:
        assert cfg.train.budget_minutes == 0 and cfg.optim.total_steps == typed["optim.total_steps"]
    elif "optim.epochs" in typed:
        assert cfg.train.budget_minutes == 0 and cfg.optim.total_steps is None
        assert cfg.optim.epochs == typed["optim.epochs"]
    elif "train.budget_minutes" in typed:
        assert cfg.train.budget_minutes == typed["train.budget_minutes"]
    else:  # nothing typed about the length: the recipe's, exactly as the overrides merge it
        merged = load_config(args.config, with_stand_ins(args.overrides, tmp_path))
        assert (cfg.train.budget_minutes, cfg.optim.total_steps, cfg.optim.epochs) == \
            (merged.train.budget_minutes, merged.optim.total_steps, merged.optim.epochs)
    if example.comment in PROMISES:
        PROMISES[example.comment](example, tmp_path)
    elif example.comment is not None:
        assert example.comment in UNCHECKED, (f"{example.where}: add a check of '{example.comment}' to PROMISES, "
                                              f"or list it in UNCHECKED with why")


def test_the_first_command_is_the_quickstart_its_heading_promises(tmp_path):
    """The README's first command (`... && dinolite pretrain`) under its bold line: a budget of the minutes the
    line names, on Fashion-MNIST, and a final k-NN beside random init and raw pixels."""
    first = README_EXAMPLES[0]
    assert first.argv == ["dinolite", "pretrain"], first
    minutes = re.search(r"for (\d+) minutes", first.heading)
    assert minutes and "Fashion-MNIST" in first.heading, first.heading
    cfg = resolve(first, tmp_path)
    assert cfg.train.budget_minutes == int(minutes[1]) and cfg.data.source == "fashion_mnist"
    assert cfg.eval.knn_at_end and cfg.eval.knn_random_init == ("random init" in first.heading)
    assert cfg.eval.knn_pixels == ("raw pixels" in first.heading)


def test_every_other_commented_command_is_checked_or_listed(tmp_path):
    """Commands that are not pretraining runs: each comment is a checked promise or is listed with why."""
    others = [e for e in README_EXAMPLES if not e.pretrain and e.comment is not None]
    for example in others:
        if example.comment in PROMISES:
            PROMISES[example.comment](example, tmp_path)
        else:
            assert example.comment in UNCHECKED, (f"{example.where}: add a check of '{example.comment}' to "
                                                  f"PROMISES, or list it in UNCHECKED with why")
    comments = {e.comment for e in README_EXAMPLES}
    assert not set(PROMISES) - comments and not set(UNCHECKED) - comments, "a listed comment left the README"


def test_the_reader_finds_the_examples():
    """The extraction itself: continuation lines joined, ``&&`` chains split, comments kept (a reader that
    found nothing would make the tests above pass vacuously)."""
    assert len(README_EXAMPLES) >= 20 and sum(e.pretrain for e in README_EXAMPLES) >= 6
    longer = [e for e in README_EXAMPLES if e.comment == "the quickstart, longer"]
    assert len(longer) == 1 and "optim.epochs=10" in longer[0].argv
    shards = [e for e in README_EXAMPLES if "data.eval_shards=/data/shards/val" in e.argv]
    assert len(shards) == 1 and shards[0].argv[:2] == ["dinolite", "pretrain"]  # joined over the backslash
    slurm = [e for e in README_EXAMPLES if e.argv[:3] == ["python", "-m", "launch.slurm"]]
    assert len(slurm) == 2 and any("data.num_workers=8" in e.argv for e in slurm)
    assert any(e.where.startswith("data.md:") for e in DOC_PRETRAIN_EXAMPLES)  # the shards quickstart
