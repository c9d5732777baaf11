"""benchmarks/pretrain_throughput.py at a tiny size on CPU: all four parts run and report figures."""

import importlib.util
import json
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "pretrain_throughput.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("pretrain_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_run_reports_all_four_parts(tmp_path):
    bench = load_benchmark()
    out = tmp_path / "result.json"
    threads = torch.get_num_threads()
    result = bench.main(["--arch", "vit_tiny_patch16_224", "--global-size", "32", "--local-size", "16",
                         "--local-crops", "2", "--batch", "4", "--steps", "2", "--warmup", "1", "--images", "12",
                         "--sides", "40", "64", "--decode-size", "64", "--out-dim", "256", "--workers", "0",
                         "--device", "cpu", "--threads", "1", "--json", str(out)])
    assert torch.get_num_threads() == threads  # --threads is the benchmark's, not the caller's
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(result))
    parts = saved["parts"]
    assert set(parts) == {"a_cpu_baseline", "b_multicrop", "c_model_step", "d_end_to_end"}
    for part in parts.values():
        assert part["images_per_s"] > 0
        assert part["flops_per_step"] > 0 and part["tflops_per_s"] > 0 and 0 < part["mfu"] <= 1
        assert part["peak_memory_gb"] is None  # CPU: no device memory to report
    # the model parts share one FLOP count, which includes attention (counted on CPU too)
    model = {parts[k]["flops_per_step"] for k in ("a_cpu_baseline", "c_model_step", "d_end_to_end")}
    assert len(model) == 1
    assert 0 <= parts["d_end_to_end"]["augment_fraction"] <= 1
    assert saved["data"]["images"] == 12 and saved["config"]["peak_source"].startswith("measured")


def test_baseline_views_follow_the_dino_recipe():
    """The torchvision baseline makes 2 global + N local normalised views, collated view-major."""
    bench = load_benchmark()
    from dinolite.config import AugmentConfig

    cfg = AugmentConfig(global_crops_size=24, local_crops_size=12, local_crops_number=3)
    sample = bench._jpeg((0, 0, 40, 64))
    views = bench.TorchvisionMultiCrop(cfg)((sample.data,))
    assert [tuple(v.shape) for v in views] == [(3, 24, 24)] * 2 + [(3, 12, 12)] * 3
    globals_, locals_ = bench.collate_views([views, views])
    assert globals_.shape == (4, 3, 24, 24) and locals_.shape == (6, 3, 12, 12)
    assert torch.equal(globals_[1], views[0]) and torch.equal(globals_[2], views[1])  # view-major


def test_options_are_measured_through_set(tmp_path):
    """--set passes config overrides (the options' cost table in docs/learning.md): iBOT adds the patch head's FLOPs."""
    bench = load_benchmark()
    common = ["--arch", "vit_tiny_patch16_224", "--global-size", "32", "--local-size", "16", "--local-crops", "2",
              "--batch", "4", "--steps", "1", "--warmup", "1", "--images", "12", "--sides", "40", "64",
              "--decode-size", "64", "--out-dim", "256", "--workers", "0", "--device", "cpu", "--threads", "1",
              "--parts", "c"]
    off = bench.main(common + ["--json", str(tmp_path / "off.json")])
    on = bench.main(common + ["--set", "loss.ibot_weight=1", "loss.ibot_mask_probability=1",
                              "loss.centering=sinkhorn_knopp", "--json", str(tmp_path / "on.json")])
    assert on["config"]["overrides"] == ["loss.ibot_weight=1", "loss.ibot_mask_probability=1",
                                         "loss.centering=sinkhorn_knopp"]
    assert on["parts"]["c_model_step"]["flops_per_step"] > off["parts"]["c_model_step"]["flops_per_step"]


def test_no_part_reports_an_mfu_above_100_percent(tmp_path, capsys):
    """A peak below what a part achieves (the committed CPU run's busy-machine matmul, 103 % MFU; here a given
    peak far too low) is raised to the fastest part's rate, with a flag and a WARNING line: MFU stays <= 1."""
    bench = load_benchmark()
    result = bench.main(["--arch", "vit_tiny_patch16_224", "--global-size", "32", "--local-size", "16",
                         "--local-crops", "2", "--batch", "4", "--steps", "1", "--warmup", "1", "--images", "12",
                         "--sides", "40", "64", "--decode-size", "64", "--out-dim", "256", "--workers", "0",
                         "--device", "cpu", "--threads", "1", "--parts", "bc", "--peak-tflops", "1e-6",
                         "--json", str(tmp_path / "r.json")])
    parts, config = result["parts"], result["config"]
    assert all(0 < part["mfu"] <= 1 for part in parts.values())
    fastest = max(parts, key=lambda k: parts[k]["flops_per_step"] / parts[k]["seconds"])
    assert parts[fastest]["mfu"] == 1.0 and config["peak_raised"]["part"] == fastest
    raised = config["peak_raised"]
    assert raised["from_tflops"] == 1e-6 and config["peak_tflops"] == raised["to_tflops"]
    assert "raised to the achieved rate" in config["peak_source"]
    assert f"WARNING: {fastest} ran at" in capsys.readouterr().out
    assert json.loads((tmp_path / "r.json").read_text())["config"]["peak_raised"]["part"] == fastest
