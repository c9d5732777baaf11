"""benchmarks/knn_features.py: the k-NN feature variants are slices of one extraction."""

import importlib.util
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]


def load():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("knn_features", ROOT / "benchmarks" / "knn_features.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_variant_is_the_parts_it_names():
    m = load()
    dim, n = 3, 4
    # ProbeFeatures' layout: the CLS of each of the last n blocks (last block last), then the patch mean
    x = torch.cat([torch.full((2, dim), float(i + 1)) for i in range(n + 1)], dim=1)
    v = m.variants(n)
    assert torch.equal(m.select(x, v["cls"], dim, False), torch.full((2, dim), 4.0))  # the last block's CLS
    assert torch.equal(m.select(x, v["patch mean"], dim, False), torch.full((2, dim), 5.0))
    both = m.select(x, v["cls + patch mean"], dim, False)
    assert torch.equal(both, torch.cat([torch.full((2, dim), 4.0), torch.full((2, dim), 5.0)], dim=1))
    assert m.select(x, v["cls of last 4 blocks + patch mean"], dim, False).shape == (2, 5 * dim)
    normed = m.select(x, v["cls + patch mean"], dim, True)
    assert torch.allclose(normed[:, :dim], F.normalize(torch.full((2, dim), 4.0), dim=1))
    assert torch.allclose(normed[:, :dim], normed[:, dim:])  # each part unit length: equal weight in the cosine
