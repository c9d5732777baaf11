"""benchmarks/provenance.py: the record every benchmark JSON carries (recipe, commit, machine, steps/s, command)."""

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "provenance.py"


def load():
    spec = importlib.util.spec_from_file_location("provenance", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def test_the_record_has_its_fields_and_the_repository_head():
    record = load().provenance("configs/quickstart.yaml", steps_per_s={"digits": 1.5},
                               argv=["benchmarks/learning.py", "--only", "digits"])
    assert {"command", "recipe", "git", "machine", "software", "steps_per_s", "started_utc"} <= set(record)
    assert json.loads(json.dumps(record)) == record  # plain JSON values

    assert record["git"]["commit"] == git("rev-parse", "HEAD").strip()
    dirty = bool(git("status", "--porcelain").strip())
    assert record["git"]["dirty"] is dirty and bool(record["git"]["changed"]) is dirty

    recipe = (ROOT / "configs" / "quickstart.yaml").read_bytes()
    assert record["recipe"]["path"] == "configs/quickstart.yaml"
    assert record["recipe"]["sha256"] == hashlib.sha256(recipe).hexdigest()
    assert record["recipe"]["text"] == recipe.decode()

    machine = record["machine"]
    assert isinstance(machine["cpu_model"], str) and machine["cpu_model"]
    assert machine["cores"] >= 1 and 1 <= machine["cores_usable"] <= machine["cores"]
    assert set(machine["cpu_flags"]) <= {"avx", "avx2", "avx512f", "avx512_bf16", "amx_bf16"}

    assert record["steps_per_s"] == {"digits": 1.5}
    command = record["command"]
    assert command["argv"][1:] == ["benchmarks/learning.py", "--only", "digits"]
    assert command["line"].endswith("benchmarks/learning.py --only digits")
    assert record["software"]["torch"] and record["software"]["torch_threads"] >= 1


def test_the_command_line_defaults_to_sys_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["benchmarks/quickstart.py", "--name", "busy", "--busy-after", "120"])
    record = load().provenance(recipe=None)
    assert record["command"]["line"].endswith("benchmarks/quickstart.py --name busy --busy-after 120")
    assert record["recipe"] is None


def test_outside_a_checkout_the_commit_is_unknown(tmp_path):
    assert load().git_state(tmp_path) == {"commit": None, "dirty": None, "changed": []}
