"""The package's layers: no import runs up.

From the bottom: the leaves (files, errors, overrides, config, loggers, distributed, data) import no
engine, no method and no task; the engine imports no maths and no task; evaluation imports no task;
fine-tuning imports nothing of pretraining; the DINO method reads no run directory.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dinolite"

TASKS = {"dinolite.train", "dinolite.loop", "dinolite.jobs", "dinolite.finetune", "dinolite.commands", "dinolite.cli"}
MATHS = {"dinolite.loss", "dinolite.models", "dinolite.augment", "dinolite.schedules", "dinolite.masking",
         "dinolite.optim", "dinolite.dino", "dinolite.eval"}
PRETRAINING = {"dinolite.train", "dinolite.dino", "dinolite.loop", "dinolite.loss", "dinolite.monitor"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every dinolite module ``path`` imports, at the top or inside functions, resolved to absolute names."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found |= {f"{target}.{a.name}" for a in node.names}  # `from . import streams`
    return {f for f in found if f.startswith("dinolite")}


def under(name: str, prefixes: set[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def modules(*prefixes: str) -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py")) if under(module_name(p), set(prefixes))]


RULES = [
    # (the modules checked, what they may not import, why)
    (("dinolite.files", "dinolite.errors", "dinolite.overrides", "dinolite.config", "dinolite.loggers",
      "dinolite.distributed", "dinolite.data"), {"dinolite.engine"} | TASKS | {"dinolite.dino"},
     "the leaves stand below the engine"),
    (("dinolite.engine",), MATHS | TASKS, "the engine imports no maths and no task"),
    (("dinolite.statedict", "dinolite.layouts.hf", "dinolite.layouts.dinov2", "dinolite.layouts.hf_export"),
     {"dinolite.engine", "dinolite.weights", "dinolite.models", "dinolite.config"} | TASKS | MATHS,
     "the layouts' name maps are leaves: they map names and shapes, and build or read no model"),
    (("dinolite.layouts", "dinolite.reuse", "dinolite.warmstart", "dinolite.weights"), TASKS,
     "reading weights imports no task"),
    (("dinolite.eval",), TASKS | {"dinolite.dino"}, "evaluation imports no task"),
    (("dinolite.finetune",), PRETRAINING, "fine-tuning imports nothing of pretraining"),
    (("dinolite.dino", "dinolite.loss", "dinolite.models", "dinolite.augment", "dinolite.schedules"),
     {"dinolite.engine.rundir", "dinolite.engine.checkpoint", "dinolite.engine.lock", "dinolite.engine.loop",
      "dinolite.files", "dinolite.loggers"} | TASKS, "the maths and the method read and write no files"),
]


@pytest.mark.parametrize(("checked", "forbidden", "why"), RULES, ids=[r[2] for r in RULES])
def test_no_import_runs_up(checked, forbidden, why):
    paths = modules(*checked)
    assert paths, f"no module matches {checked}"
    bad = {module_name(p): sorted(i for i in imports(p) if under(i, forbidden)) for p in paths}
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, f"{why}: {bad}"


def test_the_checker_sees_relative_and_nested_imports(tmp_path):
    """The rule checker itself: a relative import inside a function is found and resolved."""
    nested = PACKAGE / "engine" / "loop.py"
    assert "dinolite.distributed" in imports(nested) and "dinolite.engine.checkpoint" in imports(nested)
    assert "dinolite.files" in imports(PACKAGE / "config.py")  # imported inside save_config
