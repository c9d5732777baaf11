"""``dinolite export --hf``: transformers loads the folder and gives timm's features on real Fashion-MNIST images;
the folder is read back by knn / embed / model.init; refusals are one line with nothing written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dinolite.cli import main
from dinolite.data import build_source
from dinolite.weights import load_backbone, resolve
from tests.helpers import tiny_config, tiny_overrides
from tests.layouts.sources import hf_folder, tiny_vit


def fmnist_images(n: int = 16) -> torch.Tensor:
    """The first ``n`` Fashion-MNIST test images, normalised as the tiny runs normalise them."""
    cfg = tiny_config("unused")
    source = build_source(cfg.data, "test")
    images = torch.stack([torch.as_tensor(np.asarray(source[i][0])) for i in range(n)]).float().div(255)
    images = images.reshape(n, 1, 28, 28)
    return (images - cfg.augment.mean[0]) / cfg.augment.std[0]


def test_export_hf_gives_timm_features_in_transformers(tiny_run, tmp_path, capsys):
    import transformers

    out = tmp_path / "hf"
    assert main(["export", str(tiny_run), "--out", str(out), "--hf"]) == 0
    assert "AutoModel.from_pretrained" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["model_type"] == "vit"
    model = transformers.AutoModel.from_pretrained(str(out)).eval()
    x = fmnist_images()
    with torch.no_grad():
        theirs = model(pixel_values=x).last_hidden_state[:, 0]
        ours = load_backbone(tiny_run)(x)
        back = load_backbone(out)(x)  # and dinolite reads the folder back (knn, embed, distill --teacher)
    assert (theirs - ours).abs().max().item() < 1e-5 and (back - ours).abs().max().item() < 1e-5
    # a second export to the same folder is refused: nothing is overwritten
    before = (out / "model.safetensors").read_bytes()
    assert main(["export", str(tiny_run), "--out", str(out), "--hf"]) == 2
    assert "not a new or empty folder" in capsys.readouterr().err
    assert (out / "model.safetensors").read_bytes() == before


def test_dinov2_style_backbones_become_dinov2_models(tmp_path):
    """Layer scale -> Dinov2Model; registers -> Dinov2WithRegistersModel; both give timm's features."""
    from dinolite.layouts.hf_export import export_hf, hf_features

    x = torch.randn(3, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    for name, extra, kind in (("ls", dict(init_values=1e-5), "dinov2"),
                              ("reg", dict(reg_tokens=4), "dinov2_with_registers")):
        vit = tiny_vit(**extra)
        export_hf(vit, 3, tmp_path / name)
        assert json.loads((tmp_path / name / "config.json").read_text())["model_type"] == kind
        with torch.no_grad():
            assert (hf_features(tmp_path / name, x) - vit(x)).abs().max().item() < 1e-5
            assert (resolve(tmp_path / name).build()(x) - vit(x)).abs().max().item() < 1e-5


def test_a_backbone_transformers_lacks_is_one_line(tmp_path):
    from dinolite.errors import UserError
    from dinolite.layouts.hf_export import export_hf

    with pytest.raises(UserError, match="q/k norms") as err:
        export_hf(tiny_vit(qk_norm=True), 3, tmp_path / "out")
    assert "\n" not in str(err.value) and not (tmp_path / "out").exists()


def test_a_missing_transformers_is_one_line(tiny_run, tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers now raises ImportError
    assert main(["export", str(tiny_run), "--out", str(tmp_path / "hf"), "--hf"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'dinolite[hf]'" in err and not (tmp_path / "hf").exists()


def test_knn_and_model_init_read_a_transformers_folder(tmp_path, fmnist_root, capsys):
    folder = hf_folder(tmp_path / "hf", tiny_vit(in_chans=1), 1)
    assert main(["knn", str(folder), "--data", f"fashion_mnist:{fmnist_root}", "data.subset=128",
                 "data.test_subset=64", "data.num_workers=0", "eval.image_size=28", "augment.mean=[0.286]",
                 "augment.std=[0.353]",
                 "--no-progress"]) == 0
    assert "top-1" in capsys.readouterr().out.lower()
    run = tmp_path / "run"
    assert main(["pretrain", *tiny_overrides(run, **{"optim.total_steps": 2, "eval.knn_at_end": False,
                                                    "model.init": str(folder)}), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "continuing from the backbone" in out and "hf-vit" in out and "finished at step 2/2" in out
