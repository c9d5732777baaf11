"""benchmarks/embed_throughput.py at a tiny size: both calls run on the same images and report figures."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "embed_throughput.py"


def test_tiny_run_reports_knn_and_embed(tiny_run, tmp_path):
    spec = importlib.util.spec_from_file_location("embed_throughput", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "result.json"
    result = bench.main([str(tiny_run), "--images", "64", "--repeats", "1", "--json", str(out)])
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(result))
    assert saved["images"] == 64 and set(saved["results"]) == {"knn features", "embed"}
    for row in saved["results"].values():
        assert row["images_per_s_median"] > 0 and len(row["images_per_s"]) == 1
    assert saved["embed_over_knn"] > 0 and len(saved["load_average_before"]) == 3
    assert list(tmp_path.iterdir()) == [out]  # the embeddings it timed are gone
