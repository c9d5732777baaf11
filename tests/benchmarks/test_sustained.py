"""benchmarks/sustained.py: GFLOP/s per window of back-to-back matrix products, and its JSON."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_windows_and_json(tmp_path):
    out = tmp_path / "sustained.json"
    proc = subprocess.run([sys.executable, "benchmarks/sustained.py", "--seconds", "0.6", "--window", "0.2",
                           "--threads", "1", "--json", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(out.read_text())
    assert 3 <= len(record["gflops"]) <= 4 and all(g > 0 for g in record["gflops"])
    assert record["threads"] == 1 and record["provenance"]["git"]["commit"]
    assert "first window" in proc.stdout and proc.stdout.count("GFLOP/s") >= 4
