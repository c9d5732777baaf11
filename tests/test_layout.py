"""The package's layers: no import runs up, and no import circle.

Every module is classified in one of the LAYERS below (a new module fails the test until it is); a module may
import its own layer and those below it only. From the bottom: the foundation (files, errors, config, loggers,
distributed), the data and the maths, the engine, reading and writing weights, evaluation, the methods (DINO,
distillation, the warm starts and their factory), the tasks (pretraining, the library loop, fine-tuning, jobs),
and the command line. The RULES add narrower rules inside those: the engine imports no maths; fine-tuning
imports nothing of pretraining; the DINO method reads no run directory.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dinolite"

TASKS = {"dinolite.pretraining.train", "dinolite.pretraining.library", "dinolite.jobs", "dinolite.finetune",
         "dinolite.commands", "dinolite.cli"}
MATHS = {"dinolite.maths.loss", "dinolite.maths.models", "dinolite.maths.augment", "dinolite.maths.schedules",
         "dinolite.maths.masking", "dinolite.maths.optim", "dinolite.methods.dino", "dinolite.eval"}
PRETRAINING = {"dinolite.pretraining.train", "dinolite.methods.dino", "dinolite.pretraining.library",
               "dinolite.maths.loss", "dinolite.pretraining.monitor"}


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


# bottom to top; a prefix names a module or a package and every module under it
LAYERS: list[tuple[str, set[str]]] = [
    ("foundation", {"dinolite.files", "dinolite.errors", "dinolite.overrides", "dinolite.checks", "dinolite.config",
                    "dinolite.schema", "dinolite.pretraining.baddata", "dinolite.maths.precision",
                    "dinolite.loggers", "dinolite.distributed", "dinolite.statedict", "dinolite.pos_embed",
                    "dinolite.layouts.hf", "dinolite.layouts.dinov2", "dinolite.layouts.hf_export",
                    "dinolite.viz", "dinolite.engine.streams"}),
    ("data and maths", {"dinolite.data", "dinolite.maths", "dinolite.pretraining.budget",
                        "dinolite.pretraining.monitor"}),
    ("engine", {"dinolite.engine"}),
    ("weights", {"dinolite.weights", "dinolite.export", "dinolite.layouts", "dinolite.reuse",
                 "dinolite.pretraining.plan", "dinolite.pretraining.trained"}),
    ("evaluation", {"dinolite.eval"}),
    ("methods", {"dinolite.methods"}),
    ("tasks", {"dinolite.pretraining", "dinolite.jobs", "dinolite.finetune"}),
    ("command line", {"dinolite.commands", "dinolite.cli", "dinolite.__main__"}),
]
# The package's root holds the version, the start time and lazy re-exports: anyone may read it, and what it
# re-exports is loaded on first use (not checked here).
ROOT = "dinolite"


def layer_of(name: str) -> int | None:
    """The index in LAYERS of a module: its longest matching prefix decides (``dinolite.engine.streams`` is in
    the foundation though ``dinolite.engine`` is the engine)."""
    best: tuple[int, int] | None = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if under(name, {prefix}) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), index)
    return None if best is None else best[1]


def module_graph() -> dict[str, set[str]]:
    """Every module of the package and the modules it imports (a name imported from a package that is not a
    module of its own, ``from .schedules import Plan``, counts as the package or module that holds it)."""
    paths = sorted(PACKAGE.rglob("*.py"))
    names = {module_name(p) for p in paths}

    def holder(name: str) -> str:
        while name not in names and "." in name:
            name = name.rsplit(".", 1)[0]
        return name

    graph = {}
    for path in paths:
        name = module_name(path)
        found = {holder(i) for i in imports(path)} - {name}
        # `from . import streams` names the package and its module: the module is what is imported
        found -= {f for f in found if any(g.startswith(f + ".") for g in found)}
        graph[name] = found
    return graph


def under(name: str, prefixes: set[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def modules(*prefixes: str) -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py")) if under(module_name(p), set(prefixes))]


RULES = [
    # (the modules checked, what they may not import, why)
    (("dinolite.files", "dinolite.errors", "dinolite.overrides", "dinolite.config", "dinolite.loggers",
      "dinolite.distributed", "dinolite.data"), {"dinolite.engine"} | TASKS | {"dinolite.methods.dino"},
     "the leaves stand below the engine"),
    (("dinolite.engine",), MATHS | TASKS, "the engine imports no maths and no task"),
    (("dinolite.statedict", "dinolite.layouts.hf", "dinolite.layouts.dinov2", "dinolite.layouts.hf_export"),
     {"dinolite.engine", "dinolite.weights", "dinolite.maths.models", "dinolite.config"} | TASKS | MATHS,
     "the layouts' name maps are leaves: they map names and shapes, and build or read no model"),
    (("dinolite.layouts", "dinolite.reuse", "dinolite.methods.warmstart", "dinolite.weights"), TASKS,
     "reading weights imports no task"),
    (("dinolite.eval",), TASKS | {"dinolite.methods.dino"}, "evaluation imports no task"),
    (("dinolite.finetune",), PRETRAINING, "fine-tuning imports nothing of pretraining"),
    (("dinolite.methods.dino", "dinolite.maths"),
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


def test_every_module_has_a_layer():
    unclassified = sorted(n for n in module_graph() if n != ROOT and layer_of(n) is None)
    assert not unclassified, f"classify these modules in tests/test_layout.py LAYERS: {unclassified}"


def test_no_import_runs_up_a_layer():
    up = {}
    for name, imported in module_graph().items():
        if name == ROOT:
            continue
        mine = layer_of(name)
        above = sorted(i for i in imported if i != ROOT and (layer_of(i) or 0) > (mine or 0))
        if above:
            up[name] = [f"{i} ({LAYERS[layer_of(i) or 0][0]})" for i in above]
    assert not up, f"imports that run up a layer: {up}"


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of ``graph``: its strongly connected parts of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_circle():
    """Imports inside functions count too: a circle hidden in a function is still a circle of the design."""
    graph = {k: v - {ROOT} for k, v in module_graph().items() if k != ROOT}
    assert not cycles(graph), f"import circles: {cycles(graph)}"


def test_the_layer_checks_can_fail():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layer_of("dinolite.engine.streams") == 0 and layer_of("dinolite.engine.loop") == 2
    assert layer_of("dinolite.nowhere") is None


def test_no_private_name_crosses_modules():
    """A name with a leading underscore is its module's own: no other module imports it."""
    crossing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                crossing += [f"{module_name(path)}: {node.module}.{a.name}" for a in node.names
                             if a.name.startswith("_") and not a.name.startswith("__")]
    assert not crossing, crossing
