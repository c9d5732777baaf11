"""Recipes loaded and saved: the schema's defaults (schema.py) <- one YAML per recipe <- ``key=value`` overrides,
checked (checks.py), and the run-length rule every front end goes through (:func:`load_command_config`).

The schema's names are re-exported here (``from dinolite.config import Config`` as before).
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .checks import validate as validate
from .errors import UserError
from .overrides import apply as apply_overrides
from .overrides import is_item
from .overrides import omegaconf_problem as _one_line
from .overrides import yaml_problem as _yaml_problem
from .schema import CONFIG_DIR as CONFIG_DIR
from .schema import DEFAULT_RECIPE as DEFAULT_RECIPE
from .schema import AugmentConfig as AugmentConfig
from .schema import Config as Config
from .schema import DataConfig as DataConfig
from .schema import DistillConfig as DistillConfig
from .schema import EngineConfig as EngineConfig
from .schema import EvalConfig as EvalConfig
from .schema import LossConfig as LossConfig
from .schema import ModelConfig as ModelConfig
from .schema import OptimConfig as OptimConfig
from .schema import TrainConfig as TrainConfig
from .schema import student_name as student_name


def recipe_path(name_or_path: str | None) -> Path:
    """Resolve a recipe: a YAML path, or the name of a recipe shipped in configs/."""
    if name_or_path is None:
        name_or_path = DEFAULT_RECIPE
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = CONFIG_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
        raise UserError(f"config file {path} not found: pass --config PATH.yaml or one of: {known}")
    return path


def merge_recipe(schema: type, path: Path, overrides: list[str] | None, keys_hint: str):
    """``schema``'s defaults <- the YAML at ``path`` <- ``key=value`` overrides, as an OmegaConf object.

    Every failure is a one-line UserError; ``keys_hint`` says where the keys are documented.
    """
    try:
        loaded = OmegaConf.load(path)
    except yaml.YAMLError as err:
        raise UserError(f"{path} is not valid YAML ({_yaml_problem(err)}): fix the recipe file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read {path} ({err}): pass a readable YAML recipe") from None
    if not isinstance(loaded, DictConfig):
        raise UserError(f"{path} holds a YAML {type(loaded).__name__.replace('Config', '').lower()}, not a mapping of "
                        f"sections (data:, model:, ...): fix the recipe file")
    try:
        cfg = cast(DictConfig, OmegaConf.merge(OmegaConf.structured(schema), loaded))
    except OmegaConfBaseException as err:
        raise UserError(f"{path}: {_one_line(err)}; fix the recipe file (is it a {schema.__name__} recipe?)") from None
    cfg = apply_overrides(cfg, overrides or [], "override", keys_hint, "optim.epochs=10")
    if cfg.recipe == "custom":
        cfg.recipe = path.stem
    return cfg


def load_config(config: str | None = None, overrides: list[str] | None = None, *,
                command_line: bool = False) -> Config:
    """Defaults <- recipe YAML <- ``key=value`` overrides, type-checked, as a plain dataclass.

    ``command_line``: the overrides are what a user typed (``dinolite pretrain``, ``DINOTrainer``, the SLURM
    launcher), so a typed run length wins over the recipe's (:func:`load_command_config`). Without it the
    overrides are merged as they are, which is what code that sets a budget and epochs together relies on.
    """
    if command_line:
        return load_command_config(config, overrides)[0]
    out = cast(Config, OmegaConf.to_object(merge_recipe(Config, recipe_path(config), overrides, "configs/*.yaml")))
    validate(out)
    return out


def load_command_config(config: str | None, overrides: list[str] | None, *,
                        distill: bool = False) -> tuple[Config, str]:
    """The config a command line asks for, and the start banner's note on its run length ("" when the recipe's
    stands): the one place the run-length rule (:func:`command_line_length`) is applied, before the checks, for
    every front end (``dinolite pretrain`` / ``distill``, ``DINOTrainer``, ``launch.slurm``). ``distill``: a
    distillation recipe (default distill_fmnist), which must name a teacher."""
    recipe = config or ("distill_fmnist" if distill else None)
    out = cast(Config, OmegaConf.to_object(merge_recipe(Config, recipe_path(recipe), overrides, "configs/*.yaml")))
    note = command_line_length(out, overrides)
    validate(out)
    if distill:
        _needs_teacher(out)
    return out, note


BUDGET_KEY = "train.budget_minutes"


def typed_values(overrides: list[str] | None) -> dict[str, object]:
    """The dotted keys that ``key=value`` items set, with their values; a mapping value sets each key inside
    it (``optim={epochs: 10}`` sets ``optim.epochs``). Items that are not ``key=value`` are left out (the
    override grammar refuses them before this is asked)."""
    found: dict[str, object] = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        else:
            found[prefix] = value

    for item in overrides or []:
        if is_item(item):
            walk("", OmegaConf.to_container(OmegaConf.from_dotlist([item])))
    return found


def command_line_length(cfg: Config, overrides: list[str] | None) -> str:
    """What the user typed wins over the recipe's run length; returns the start banner's note ("" when the
    recipe's own length stands). ``cfg`` is the config loaded with ``overrides``; it is changed in place,
    before anything is built or written.

    A run's length is a time budget (``train.budget_minutes`` > 0, which fixes ``optim.total_steps`` when the
    run starts), else ``optim.total_steps``, else ``optim.epochs``. A recipe with a budget (the quickstart's
    10 minutes) would silently replace an ``optim.epochs`` or ``optim.total_steps`` typed in ``overrides``,
    so a typed length drops the recipe's budget (and a typed ``optim.epochs`` the recipe's
    ``optim.total_steps``). A typed budget > 0 beside a typed length is a UserError naming both: the two
    ask for different runs and only the user knows which one is meant. A resume passes the same overrides,
    so it resolves to the same length (a budget run keeps the step count it saved: runplan.resumed_budget_plan).
    """
    typed = typed_values(overrides)
    steps_typed = typed.get("optim.total_steps") is not None  # optim.total_steps=null sets no length
    if not steps_typed and "optim.epochs" not in typed:
        return ""
    o, t = cfg.optim, cfg.train
    length = f"optim.total_steps={o.total_steps}" if steps_typed else f"optim.epochs={o.epochs}"
    if BUDGET_KEY in typed and t.budget_minutes > 0:
        raise UserError(f"{BUDGET_KEY}={t.budget_minutes:g} and {length} are both on the command line: a run's "
                        f"length is a time budget or a step count, not both; keep one of the two")
    dropped = []
    if t.budget_minutes > 0:  # not typed (a typed one is 0 here): the recipe's
        dropped.append(f"{BUDGET_KEY}={t.budget_minutes:g}")
        t.budget_minutes = 0.0
    if not steps_typed and o.total_steps is not None:  # optim.epochs typed, the recipe's step count would win
        dropped.append(f"optim.total_steps={o.total_steps}")
        o.total_steps = None
    if not dropped:
        return ""
    verb = "is" if len(dropped) == 1 else "are"
    return f"run length: {length} from the command line (the recipe's {' and '.join(dropped)} {verb} not used)"


def load_distill_config(config: str | None = None, overrides: list[str] | None = None, *,
                        command_line: bool = False) -> Config:
    """A distillation recipe (default: distill_fmnist) with its overrides; one naming no teacher is refused."""
    if command_line:
        return load_command_config(config, overrides, distill=True)[0]
    cfg = load_config(config or "distill_fmnist", overrides)
    _needs_teacher(cfg)
    return cfg


def _needs_teacher(cfg: Config) -> None:
    if not cfg.distill.teacher:
        raise UserError("dinolite distill needs a teacher: pass --teacher RUN_OR_CHECKPOINT (or distill.teacher=...)")


def as_dict(cfg) -> dict:
    """A config dataclass (or one of its sections) as plain containers (checkpoints, JSON and loggers
    hold no dataclasses)."""
    return cast(dict, OmegaConf.to_container(OmegaConf.structured(cfg)))


def save_config(cfg, path: Path) -> None:
    """A resolved config (any of the config dataclasses) as YAML, written to a temporary name and renamed."""
    from .files import write_text

    write_text(path, OmegaConf.to_yaml(OmegaConf.structured(cfg)))


def read_saved_config(path: Path, schema: type | None = None):
    """Load a run directory's resolved config.yaml (written by :func:`save_config`) as ``schema`` (default Config)."""
    schema = schema or Config
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.load(path))
    except OmegaConfBaseException as err:
        raise UserError(f"{path}: {_one_line(err)}; the run directory's config is not a {schema.__name__}") from None
    return OmegaConf.to_object(merged)
