"""Every backbone-only layout, written by the test from a random model of that architecture, reads back as the
same features (1e-5); what does not fit is one line, with nothing written."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from dinolite.cli import main
from dinolite.errors import UserError
from dinolite.export import export_backbone
from dinolite.layouts.source import fit_state, read_backbone
from dinolite.weights import BackboneSpec, resolve
from tests.helpers import tiny_overrides
from tests.layouts.sources import dinov2_official, tiny_vit

X3 = torch.randn(3, 3, 28, 28, generator=torch.Generator().manual_seed(1))


def write_timm(tmp_path):
    vit = tiny_vit()
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(tmp_path / "vit.safetensors"))
    return tmp_path / "vit.safetensors", vit, X3


def write_export(tmp_path):
    vit = tiny_vit(reg_tokens=2)
    kwargs = dict(num_classes=0, dynamic_img_size=True, img_size=28, in_chans=3, patch_size=7, embed_dim=64,
                  depth=2, num_heads=1, reg_tokens=2)
    spec = BackboneSpec("vit_base_patch16_224", kwargs, vit.state_dict(), tmp_path / "x", "dinolite-export")
    return export_backbone(spec, tmp_path / "export"), vit, X3


def write_dinov2(registers):
    def write(tmp_path):
        vit = dinov2_official(tmp_path / "dinov2.pth", registers)
        return tmp_path / "dinov2.pth", vit, torch.randn(2, 3, 518, 518, generator=torch.Generator().manual_seed(2))
    return write


def write_hf(kind):
    """A transformers model of ``kind`` with a small config, saved by transformers itself; the reference is
    transformers' own output."""
    def write(tmp_path):
        import transformers

        small = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=28, patch_size=7,
                     num_channels=3, layer_norm_eps=1e-6)
        if kind == "vit":
            config, model_class = transformers.ViTConfig(intermediate_size=256, **small), transformers.ViTModel
        elif kind == "dinov2":
            config, model_class = transformers.Dinov2Config(mlp_ratio=4, **small), transformers.Dinov2Model
        else:
            config = transformers.Dinov2WithRegistersConfig(mlp_ratio=4, num_register_tokens=4, **small)
            model_class = transformers.Dinov2WithRegistersModel
        torch.manual_seed(0)
        model = model_class(config).eval()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        model.save_pretrained(tmp_path / "hf")

        class Features(torch.nn.Module):
            def forward(self, x):
                return model(pixel_values=x).last_hidden_state[:, 0]
        return tmp_path / "hf", Features(), X3
    return write


LAYOUTS = {"timm-safetensors": write_timm, "dinolite-export": write_export, "dinov2": write_dinov2(False),
           "dinov2-registers": write_dinov2(True), "hf-vit": write_hf("vit"), "hf-dinov2": write_hf("dinov2"),
           "hf-dinov2-registers": write_hf("dinov2_with_registers")}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_gives_the_source_features(tmp_path, layout):
    path, source, x = LAYOUTS[layout](tmp_path)
    with torch.no_grad():
        want = source(x)
        got = resolve(path).build()(x)  # what knn, embed and distill --teacher load
    assert (got - want).abs().max().item() < 1e-5
    backbone = read_backbone(path)  # what model.init reads: the same weights, architecture from the file
    model = resolve(path).build()
    state, notes = fit_state(backbone, model)
    assert notes == [] and all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_a_3_channel_source_on_grey_images_sums_its_patch_embedding(tmp_path):
    path, vit, _ = write_timm(tmp_path)
    grey = torch.rand(2, 1, 28, 28)
    model = resolve(path).build()
    model.patch_embed.proj.weight = torch.nn.Parameter(torch.zeros(64, 1, 7, 7))
    from timm import create_model

    one = create_model("vit_base_patch16_224", num_classes=0, in_chans=1, img_size=28, patch_size=7, embed_dim=64,
                       depth=2, num_heads=1, dynamic_img_size=True).eval()
    state, notes = fit_state(read_backbone(path), one)
    one.load_state_dict(state)
    with torch.no_grad():
        assert (one(grey) - vit(grey.expand(-1, 3, -1, -1))).abs().max().item() < 1e-5
    assert "summed over the channels" in notes[0]


def corrupt(kind, tmp_path):
    """An HF folder or a DINOv2 file spoiled in one way; returns the path and the expected words."""
    path, _, _ = (write_hf("dinov2") if kind != "truncated" and kind != "pickle" else write_dinov2(False))(tmp_path)
    if kind in ("leftover", "missing", "shape"):
        from safetensors.torch import load_file

        state = load_file(str(path / "model.safetensors"))
        if kind == "leftover":
            state["encoder.layer.0.attention.attention.extra.weight"] = torch.zeros(2)
            words = "not in this model: blocks.0.attention.attention.extra.weight"
        elif kind == "missing":
            del state["encoder.layer.1.norm2.weight"]
            words = "missing: blocks.1.norm2.weight"
        else:
            state["layernorm.weight"] = torch.ones(65)
            words = "norm.weight (65,) in the file"
        save_file(state, str(path / "model.safetensors"))
        return path, words
    if kind == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[:len(data) // 2])
        return path, "torch cannot read it"
    state = torch.load(path, weights_only=True)
    state["hook"] = UserError("runs code")  # an object: unpickling would build it
    torch.save(state, path)
    return path, "would run code"


@pytest.mark.parametrize("kind", ["leftover", "missing", "shape", "pickle", "truncated"])
def test_a_source_that_does_not_fit_is_one_line_and_nothing_is_written(tmp_path, fmnist_root, capsys, kind):
    path, words = corrupt(kind, tmp_path)
    capsys.readouterr()
    run = tmp_path / "run"
    assert main(["pretrain", *tiny_overrides(run, **{"model.init": str(path)}), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err, err
    assert not run.exists() or {p.name for p in run.iterdir()} <= {".lock"}  # the run lock (released) alone


def test_a_dinov3_file_is_refused_in_one_line(tmp_path):
    torch.save({"cls_token": torch.zeros(1, 1, 64), "storage_tokens": torch.zeros(1, 4, 64),
                "rope_embed.periods": torch.ones(8)}, tmp_path / "dinov3.pth")
    with pytest.raises(UserError, match="DINOv3 backbone: timm builds DINOv3 as an Eva model"):
        read_backbone(tmp_path / "dinov3.pth")
