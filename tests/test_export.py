"""Export to plain timm, loading from every layout (official DINO included), and the refusals."""

import json
import os
import subprocess
import sys
from argparse import Namespace

import numpy as np
import pytest
import timm
import torch

import dinolite
from dinolite.cli import main
from dinolite.engine import checkpoint as ckpt
from dinolite.errors import UserError
from dinolite.weights import load_backbone, resolve

FRESH = """
import json, sys, timm, torch
out = sys.argv[1]
info = json.load(open(out + "/config.json"))
model = timm.create_model(info["timm_model"], pretrained=True,
                          pretrained_cfg_overlay=dict(file=out + "/model.safetensors"), **info["timm_kwargs"]).eval()
x = torch.load(sys.argv[2], weights_only=True)
with torch.no_grad():
    torch.save(model(x), sys.argv[3])
"""


def test_export_loads_in_a_fresh_process_with_identical_outputs(tiny_run, tmp_path, capsys):
    out = tmp_path / "export"
    assert main(["export", str(tiny_run), "--out", str(out)]) == 0
    x = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    torch.save(x, tmp_path / "x.pt")
    subprocess.run([sys.executable, "-c", FRESH, str(out), str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
                   check=True, capture_output=True)
    fresh = torch.load(tmp_path / "y.pt", weights_only=True)
    teacher = ckpt.latest_valid(tiny_run)[1]["teacher"]
    trained = resolve(tiny_run).build()
    assert torch.equal(trained.state_dict()["cls_token"], teacher["backbone.cls_token"])
    with torch.no_grad():
        diff = (fresh - trained(x)).abs().max().item()
    print(f"export round trip max abs diff: {diff:.3g}")
    assert diff < 1e-5
    with torch.no_grad():  # dinolite.load_backbone on the export folder and on the run give the same model
        assert torch.equal(dinolite.load_backbone(out)(x), trained(x))
        assert torch.equal(load_backbone(tiny_run / "teacher_backbone.safetensors")(x), trained(x))


def test_export_folder_is_never_overwritten_with_different_files(tiny_run, tmp_path, capsys):
    out = tmp_path / "export"
    assert main(["export", str(tiny_run), "--out", str(out)]) == 0
    before = (out / "model.safetensors").read_bytes()
    assert main(["export", str(tiny_run), "--out", str(out)]) == 0  # the same export again: a no-op
    capsys.readouterr()
    assert main(["export", str(tiny_run), "--out", str(out), "--checkpoint-key", "student"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "already holds different files" in err
    assert (out / "model.safetensors").read_bytes() == before
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main(["export", str(tiny_run), "--out", str(other)]) == 2
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]


def test_onnx_export_matches_torch(tiny_run, tmp_path):
    out = tmp_path / "export"
    assert main(["export", str(tiny_run), "--out", str(out), "--onnx"]) == 0
    diff = onnx_vs_torch(out / "model.onnx", load_backbone(out), 1, 28)
    print(f"quickstart ViT: onnxruntime vs torch max abs diff {diff:.3g}")


# ---- ONNX for every backbone -----------------------------------------------------------------------

def onnx_vs_torch(graph, model, channels: int, size: int) -> float:
    """The largest |onnxruntime - torch| of ``graph`` against ``model`` at two batch sizes (1 and 3; the export
    traces with 2), after checking that the graph's batch axis is symbolic and its image size is ``size``."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    shape = session.get_inputs()[0].shape
    assert isinstance(shape[0], str) and shape[1:] == [channels, size, size], shape
    worst = 0.0
    for batch in (1, 3):
        x = torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            want = model.eval()(x).numpy()
        got = session.run(None, {"images": x.numpy()})[0]
        assert got.shape == want.shape
        worst = max(worst, float(np.abs(got - want).max()))
    assert worst <= 1e-4
    return worst


def onnx_size(size: int | None) -> list[str]:
    return ["--onnx-size", str(size)] if size else []


def dinolite_checkpoint(path, image_size: int = 28, **model) -> object:
    """A checkpoint in dinolite's training layout (teacher/student with ``backbone.``, the run's config) holding
    a randomly initialised backbone of the tiny recipe with the ``model.*`` changes: no training needed."""
    from dinolite.config import as_dict
    from dinolite.maths.models import build_backbone
    from tests.helpers import tiny_config

    cfg = tiny_config(path.parent / "run")
    cfg.eval.image_size = image_size
    for key, value in model.items():
        setattr(cfg.model, key, value)
    torch.manual_seed(0)
    backbone = build_backbone(cfg.model, len(cfg.augment.mean), cfg.augment.global_crops_size, 0.0)
    with torch.no_grad():  # weights whose every part shows in the output, unlike timm's initialisation:
        for name, tensor in backbone.state_dict().items():
            if name.endswith(("ls1.gamma", "ls2.gamma")):  # LayerScale starts at 1e-5 (DINOv2)
                tensor.fill_(1.0)
            elif name == "pos_embed":  # and position embeddings at std 0.02
                tensor.normal_(std=0.5)
    teacher = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    torch.save({"teacher": teacher, "student": teacher, "config": as_dict(cfg), "step": 0}, path)
    return path


@pytest.mark.parametrize("arch,size", [("vit_small_patch16_224", None), ("vit_small_patch16_224", 42),
                                       ("vit_small_patch14_reg4_dinov2", 14)])
def test_onnx_export_of_vits_with_register_tokens(tmp_path, arch, size):
    """A run with model.reg_tokens=4, and timm's DINOv2 ViT with 4 registers (LayerScale, embeddings beside the
    class token), at the run's 28 px and at sizes whose position embeddings timm resamples (up to 42, down to 14):
    its antialiased bicubic has no ONNX operator, so the export bakes the resampled table in."""
    ckpt_path = dinolite_checkpoint(tmp_path / "ckpt.pt", arch=arch, reg_tokens=4 if "reg4" not in arch else None)
    out = tmp_path / "export"
    assert main(["export", str(ckpt_path), "--out", str(out), "--onnx", *onnx_size(size)]) == 0
    model = resolve(ckpt_path).build()
    assert model.num_prefix_tokens == 5 and model.reg_token.shape[1] == 4
    diff = onnx_vs_torch(out / "model.onnx", model, 1, size or 28)
    print(f"{arch} with 4 registers at {size or 28} px: onnxruntime vs torch max abs diff {diff:.3g}")


@pytest.mark.parametrize("arch,size", [("resnet10t", None), ("convnext_atto", 32)])
def test_onnx_export_of_cnns(tmp_path, capsys, arch, size):
    """timm CNNs (global average pooling, no position embeddings) at the run's evaluation size (28 px: the
    default, where 224 used to be taken for any CNN) or at --onnx-size."""
    kw = dict(arch=arch, patch_size=None, embed_dim=None, depth=None, num_heads=None)
    ckpt_path = dinolite_checkpoint(tmp_path / "ckpt.pt", **kw)
    out = tmp_path / "export"
    assert main(["export", str(ckpt_path), "--out", str(out), "--onnx", *onnx_size(size)]) == 0
    assert f"[batch, 1, {size or 28}, {size or 28}]" in capsys.readouterr().out
    diff = onnx_vs_torch(out / "model.onnx", load_backbone(out), 1, size or 28)
    print(f"{arch} at {size or 28} px: onnxruntime vs torch max abs diff {diff:.3g}")


def test_onnx_export_of_an_official_dino_vit_s16_at_224(tmp_path):
    """A backbone file in the layout of dino_deitsmall16_pretrain.pth (random weights, ViT-S/16 as released:
    width 384, 6 heads, depth 12), exported at its 224 px."""
    torch.manual_seed(0)
    vit = timm.create_model("vit_small_patch16_224", num_classes=0).eval()
    torch.save(vit.state_dict(), tmp_path / "dino_deitsmall16_pretrain.pth")
    out = tmp_path / "export"
    assert main(["export", str(tmp_path / "dino_deitsmall16_pretrain.pth"), "--out", str(out), "--onnx"]) == 0
    info = json.loads((out / "config.json").read_text())
    assert info["source_kind"] == "dino-official" and info["timm_kwargs"]["depth"] == 12
    assert info["timm_kwargs"]["num_heads"] == 6 and info["pretrained_cfg"]["input_size"] == [3, 224, 224]
    diff = onnx_vs_torch(out / "model.onnx", vit, 3, 224)
    print(f"official DINO ViT-S/16 at 224 px: onnxruntime vs torch max abs diff {diff:.3g}")


def test_onnx_export_of_an_official_training_checkpoint_at_another_size(tmp_path):
    """DINO's checkpoint.pth layout at 48 px (a 6 x 6 grid from the 4 x 4 of 32 px): the graph adds the
    position embeddings of the reference code's interpolation, which the tracer cannot follow itself."""
    vit = official_vit()
    with torch.no_grad():
        vit.pos_embed.normal_(std=0.5)  # a pronounced embedding, so the interpolation shows
    teacher = {f"backbone.{k}": v for k, v in vit.state_dict().items()}
    torch.save({"teacher": teacher, "student": {f"module.{k}": v for k, v in teacher.items()}, "epoch": 3},
               tmp_path / "checkpoint.pth")
    out = tmp_path / "export"
    assert main(["export", str(tmp_path / "checkpoint.pth"), "--out", str(out), "--onnx", "--onnx-size", "48"]) == 0
    dino_way = resolve(tmp_path / "checkpoint.pth").build()
    diff = onnx_vs_torch(out / "model.onnx", dino_way, 3, 48)
    timm_way = load_backbone(out)  # the export folder alone resamples the timm way: another function
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert (timm_way(x) - dino_way(x)).abs().max() > 1e-3
    print(f"official DINO checkpoint at 48 px: onnxruntime vs torch max abs diff {diff:.3g}")


@pytest.mark.parametrize("missing", ["onnx", "onnxruntime"])
def test_onnx_export_without_the_packages_is_one_line(tmp_path, capfd, monkeypatch, missing):
    ckpt_path = dinolite_checkpoint(tmp_path / "ckpt.pt")
    monkeypatch.setitem(sys.modules, missing, None)  # "import onnxruntime" now raises ImportError
    out = tmp_path / "export"
    assert main(["export", str(ckpt_path), "--out", str(out), "--onnx"]) == 2
    err = capfd.readouterr().err.strip()
    assert err == ("dinolite: error: --onnx needs the onnx and onnxruntime packages: "
                   "pip install 'dinolite[onnx]'"), err
    assert not out.exists()


def _exporter_crash(monkeypatch) -> None:
    """torch.onnx.export writes part of a file, then fails with a multi-line error."""
    def crash(model, args, path, **kw):
        with open(path, "wb") as f:
            f.write(b"partial graph")
        raise RuntimeError("ONNX export failed: Couldn't export Python operator FancyOp\nmore details")

    monkeypatch.setattr(torch.onnx, "export", crash)


@pytest.mark.parametrize("case,args,words", [pytest.param(*case, id=case[0]) for case in [
    # timm's own resampling of the position embeddings traced as it is: a real ONNX conversion failure
    ("unconvertible", ["--onnx-size", "42"], "aten::_upsample_bicubic2d_aa"),
    ("crash", [], "Couldn't export Python operator FancyOp"),
    ("too-small", ["--onnx-size", "3"], "cannot run on a 1 x 3 x 3 input"),
    ("registers", ["--pos-interp", "dino"], "--pos-interp dino applies to ViTs with a class token and no register"),
    ("size-zero", ["--onnx-size", "0"], "--onnx-size must be a positive number"),
]])
def test_onnx_export_that_fails_writes_nothing(tmp_path, capfd, monkeypatch, case, args, words):
    """A graph that cannot be traced or converted, a size the model cannot take, options that do not apply:
    one line, exit 2, no --out folder (not even the safetensors and JSON, which used to be written first), and
    not the hundreds of lines of TorchScript graph that torch prints when a conversion fails."""
    import dinolite.export

    ckpt_path = dinolite_checkpoint(tmp_path / "ckpt.pt", reg_tokens=4 if case == "registers" else None)
    if case == "unconvertible":
        monkeypatch.setattr(dinolite.export, "_bake_position_embeddings", lambda model, example: model)
    elif case == "crash":
        _exporter_crash(monkeypatch)
    out = tmp_path / "new" / "export"
    assert main(["export", str(ckpt_path), "--out", str(out), "--onnx", *args]) == 2
    captured = capfd.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and words in err, err
    assert captured.out == "" and not (tmp_path / "new").exists()


def test_onnx_export_into_an_existing_export_adds_only_the_graph(tmp_path, capfd):
    """--onnx into a folder that holds the same export adds model.onnx; the same graph again is a no-op (the
    export is deterministic); another graph (here another size) is refused and the old one kept."""
    ckpt_path = dinolite_checkpoint(tmp_path / "ckpt.pt")
    out = tmp_path / "export"
    assert main(["export", str(ckpt_path), "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(["export", str(ckpt_path), "--out", str(out), "--onnx"]) == 0  # the same export, plus the graph
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != "model.onnx"} == before
    graph = (out / "model.onnx").read_bytes()
    assert main(["export", str(ckpt_path), "--out", str(out), "--onnx"]) == 0  # the same graph again: a no-op
    capfd.readouterr()
    assert main(["export", str(ckpt_path), "--out", str(out), "--onnx", "--onnx-size", "42"]) == 2
    err = capfd.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "already holds another ONNX graph" in err, err
    assert (out / "model.onnx").read_bytes() == graph


# ---- official DINO checkpoints ------------------------------------------------------------------

def official_vit():
    """A ViT shaped like DINO's ViT-S/16 but small: width 128 = 2 heads of 64, patch 8, 32 px."""
    torch.manual_seed(0)
    return timm.create_model("vit_small_patch16_224", num_classes=0, img_size=32, patch_size=8, embed_dim=128,
                             depth=2, num_heads=2).eval()


def test_official_backbone_file_and_training_checkpoint_map_onto_timm(tmp_path):
    vit = official_vit()
    state = vit.state_dict()
    # Backbone-only release file (dino_deitsmall16_pretrain.pth layout): plain timm names.
    torch.save(state, tmp_path / "backbone.pth")
    # Training checkpoint (checkpoint.pth layout): teacher with backbone./head., student DDP-wrapped.
    head = {"head.mlp.0.weight": torch.randn(16, 128), "head.last_layer.weight_g": torch.ones(8, 1)}
    teacher = {**{f"backbone.{k}": v for k, v in state.items()}, **head}
    student = {f"module.{k}": v * 0 for k, v in teacher.items()}
    torch.save({"teacher": teacher, "student": student, "optimizer": {"state": {}}, "epoch": 3,
                "args": Namespace(arch="vit_small", patch_size=8)}, tmp_path / "checkpoint.pth")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = vit(x)
        for path in ("backbone.pth", "checkpoint.pth"):
            spec = resolve(tmp_path / path)
            assert spec.kind == "dino-official" and spec.kwargs["num_heads"] == 2 and spec.kwargs["patch_size"] == 8
            torch.testing.assert_close(spec.build()(x), ref, rtol=0, atol=0)
        student_model = load_backbone(tmp_path / "checkpoint.pth", "student")
        assert torch.equal(student_model.cls_token, torch.zeros_like(vit.cls_token))
    assert main(["export", str(tmp_path / "checkpoint.pth"), "--out", str(tmp_path / "exp")]) == 0
    assert json.loads((tmp_path / "exp" / "config.json").read_text())["source_kind"] == "dino-official"


def test_official_checkpoint_that_does_not_fit_lists_missing_and_unexpected_keys(tmp_path):
    state = dict(official_vit().state_dict())
    del state["blocks.1.norm1.weight"]
    state["blocks.1.extra.weight"] = torch.zeros(3)
    torch.save({"teacher": {f"backbone.{k}": v for k, v in state.items()}}, tmp_path / "bad.pth")
    keys = r"missing: blocks\.1\.norm1\.weight, not in this model: blocks\.1\.extra\.weight"
    with pytest.raises(UserError, match=keys):
        load_backbone(tmp_path / "bad.pth")


# ---- one-line refusals ---------------------------------------------------------------------------

class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("case", ["pickle", "text", "tensors", "missing"])
def test_bad_checkpoints_give_one_line_errors(tmp_path, capsys, case):
    path, marker = tmp_path / "x.pt", tmp_path / "ran"
    if case == "pickle":
        torch.save({"teacher": RunsCode(marker)}, path)
    elif case == "text":
        path.write_text("not a checkpoint\n")
    elif case == "tensors":
        torch.save({"weight": torch.zeros(2)}, path)
    code = main(["knn", str(path), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    expected = {"pickle": "refused to load", "text": "is not a dinolite or DINO checkpoint",
                "tensors": "is not a dinolite or DINO ViT checkpoint", "missing": "not found"}[case]
    assert expected in err
    assert not marker.exists()  # the pickled command never ran


def _mutations():
    def not_json(info):
        return "{not json"

    def without(key):
        return lambda info: json.dumps({k: v for k, v in info.items() if k != key})

    def with_kwarg(key, value):
        return lambda info: json.dumps({**info, "timm_kwargs": {**info["timm_kwargs"], key: value}})

    def with_file(name):
        return lambda info: json.dumps({**info, "file": name})

    return [
        (not_json, "is not readable JSON"),
        (lambda info: json.dumps([info]), "holds a JSON list"),
        (without("timm_kwargs"), "'timm_kwargs' is missing"),
        (without("timm_model"), "'timm_model' is missing"),
        (with_kwarg("checkpoint_path", "/etc/passwd"), "'checkpoint_path', not an architecture argument"),
        (with_kwarg("pretrained_cfg_overlay", "x"), "not an architecture argument"),
        (with_kwarg("depth", {"a": 1}), "timm_kwargs['depth'] must be"),
        (with_kwarg("depth", 3), "does not fit"),
        (with_file("../model.safetensors"), "points outside the export folder"),
        (with_file("/etc/passwd"), "points outside the export folder"),
        (lambda info: json.dumps({**info, "timm_model": "no_such_model"}), "is not a timm model name"),
    ]


@pytest.mark.parametrize("mutate,words", _mutations())
def test_export_folders_from_elsewhere_are_untrusted_input(tiny_run, tmp_path, capsys, mutate, words):
    out = tmp_path / "export"
    assert main(["export", str(tiny_run), "--out", str(out)]) == 0
    (tmp_path / "model.safetensors").write_bytes((out / "model.safetensors").read_bytes())  # a file just outside
    info = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(mutate(info))
    before = sorted(p.name for p in out.iterdir())
    capsys.readouterr()
    assert main(["knn", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err, err
    assert sorted(p.name for p in out.iterdir()) == before  # nothing written or lost


@pytest.mark.parametrize("name", ["empty.pt", "empty.pth", "empty.safetensors"])
def test_zero_byte_weight_files_are_one_line(tmp_path, capsys, name):
    (tmp_path / name).write_bytes(b"")
    assert main(["knn", str(tmp_path / name)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(tmp_path / name) in err, err


def test_export_is_timm_native_with_its_preprocessing(tiny_run, tmp_path):
    """``timm.create_model("local-dir:DIR", pretrained=True)`` loads the export, and timm's data config is the
    run's evaluation view (1 channel, 28 px, Fashion-MNIST's mean/std), not timm's 3 x 224 defaults."""
    import stat

    out = tmp_path / "export"
    assert main(["export", str(tiny_run), "--out", str(out)]) == 0
    model = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    cfg = timm.data.resolve_data_config(model=model)
    assert cfg["input_size"] == (1, 28, 28) and cfg["mean"] == [0.286] and cfg["std"] == [0.353]
    assert cfg["crop_pct"] == 1.0 and cfg["crop_mode"] == "center"
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model(x), dinolite.load_backbone(out)(x))
    for f in ("model.safetensors", "config.json"):
        assert stat.S_IMODE((out / f).stat().st_mode) == 0o644


def test_exports_of_the_old_layout_still_load(tiny_run, tmp_path):
    """An export written before the timm layout (dinolite's fields only) loads with dinolite.load_backbone."""
    out = tmp_path / "export"
    assert main(["export", str(tiny_run), "--out", str(out)]) == 0
    info = json.loads((out / "config.json").read_text())
    old = {k: v for k, v in info.items() if k not in ("architecture", "num_classes", "model_args", "pretrained_cfg")}
    (out / "config.json").write_text(json.dumps(old))
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(dinolite.load_backbone(out)(x), resolve(tiny_run).build()(x))


def reference_pos_embed(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """From the reference code's description (facebookresearch/dino, interpolate_pos_encoding): keep the class
    token's embedding; reshape the N patch embeddings to a sqrt(N) square, bicubic-interpolate by the scale
    factor (grid + 0.1) / sqrt(N), no antialiasing; flatten back."""
    side = round((pos_embed.shape[1] - 1) ** 0.5)
    patches = pos_embed[0, 1:].T.reshape(1, -1, side, side)
    factor = (grid + 0.1) / side
    out = torch.nn.functional.interpolate(patches, scale_factor=(factor, factor), mode="bicubic")
    return torch.cat([pos_embed[:, :1], out.reshape(1, pos_embed.shape[-1], grid * grid).transpose(1, 2)], dim=1)


def test_official_checkpoints_interpolate_position_embeddings_like_the_reference(tmp_path, capsys):
    """At 96 px (a 6 x 6 grid from the 14 x 14 of 224 px) the CLS output equals a ViT built for 96 px whose
    position embeddings were resized the reference way; timm's own resampling gives other features."""
    torch.manual_seed(0)
    vit = timm.create_model("vit_small_patch16_224", num_classes=0, embed_dim=128, depth=2, num_heads=2).eval()
    with torch.no_grad():
        vit.pos_embed.normal_(std=0.5)  # a pronounced embedding, so interpolation differences show
    torch.save(vit.state_dict(), tmp_path / "backbone.pth")
    ref = timm.create_model("vit_small_patch16_224", num_classes=0, embed_dim=128, depth=2, num_heads=2,
                            img_size=96).eval()
    state = {**vit.state_dict(), "pos_embed": reference_pos_embed(vit.pos_embed.detach(), 6)}
    ref.load_state_dict(state)
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    spec = resolve(tmp_path / "backbone.pth")
    assert spec.pos_interp == "dino"
    with torch.no_grad():
        want, got = ref(x), spec.build()(x)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(spec.build()(torch.randn(1, 3, 224, 224)).shape, torch.Size([1, 128]))
        spec.pos_interp = "timm"
        timm_way = spec.build()(x)
    assert (timm_way - want).abs().max() > 1e-3  # the option matters at this size
