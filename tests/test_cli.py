"""The command line itself: overrides anywhere among the flags, --version, unknown flags."""

from __future__ import annotations

import subprocess
import sys

import pytest

import dinolite
from dinolite.cli import main, parse


def test_overrides_after_flags_are_overrides():
    args = parse(["pretrain", "optim.epochs=1", "--no-progress", "train.output_dir=runs/x", "--config", "quickstart",
                  "model.depth=2"])
    assert args.no_progress and args.config == "quickstart"
    assert args.overrides == ["optim.epochs=1", "train.output_dir=runs/x", "model.depth=2"]
    ft = parse(["finetune", "--init", "timm:x", "optim.epochs=1", "--method", "layerwise", "train.seed=3"])
    assert ft.overrides == ["optim.epochs=1", "train.seed=3"] and ft.method == "layerwise"


def test_an_override_after_a_flag_takes_effect(capsys, tmp_path):
    assert main(["pretrain", "--no-progress", f"train.output_dir={tmp_path / 'r'}", "--config", "quickstart",
                 "data.subset=-3"]) == 2
    assert "data.subset must be >= 0" in capsys.readouterr().err


def test_unknown_flags_still_fail_and_version_prints(capsys):
    with pytest.raises(SystemExit) as exit_:
        parse(["pretrain", "--no-progress", "--bogus", "optim.epochs=1"])
    assert exit_.value.code == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err
    out = subprocess.run([sys.executable, "-m", "dinolite.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"dinolite {dinolite.__version__}"


def test_help_does_not_import_torch():
    """``dinolite --help`` builds every subcommand's parser without the heavy imports (timed in benchmarks/cli_startup.py)."""
    code = "import sys\nfrom dinolite.cli import build_parser\nbuild_parser()\nprint(sorted(m for m in ('torch', 'timm', 'kornia') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


def test_every_option_of_every_command_has_help_text():
    import argparse

    from dinolite.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing = [f"{name} {a.option_strings or a.dest}" for name, p in sub.choices.items() for a in p._actions
               if not isinstance(a, argparse._HelpAction) and not a.help]
    assert missing == []
    for name, p in sub.choices.items():
        assert "%%" not in p.format_help(), name
