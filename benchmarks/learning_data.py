"""Real datasets for the learning benchmark that this machine has without a download at run time.

- Fashion-MNIST (Debian package ``dataset-fashion-mnist``), whole or as its first N training images.
- Animal-Shape (PyPI package ``animal-shape-mnist``, MIT licence): 10,000 real 28 x 28 grayscale
  animal silhouettes, 10 classes of 1,000 (bear, bird, cat, cow, dog, elephant, giraffe, horse, sheep,
  zebra). Install it with ``pip install --no-deps animal-shape-mnist`` (its loader module imports
  TensorFlow; only its data files are read here). :func:`animal_shape_folder` writes it once as an
  image folder, 800 training and 200 test images per class.

The package stores its arrays as pickles; they are read with an unpickler that can build numpy
arrays and nothing else, so no code in them can run.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import pickle
from pathlib import Path

import numpy as np

ANIMAL_CLASSES = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]


class _ArraysOnly(pickle.Unpickler):
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing {module}.{name}: only numpy arrays are read")


def _package_dir() -> Path:
    spec = importlib.util.find_spec("animal_shape_mnist")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("Animal-Shape is not installed: pip install --no-deps animal-shape-mnist")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "Animal Shape"


def load_animal_shape() -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [10000, 28, 28], labels int64 [10000])`` from the installed package's files."""
    folder = _package_dir()
    arrays = []
    for name in ("animal_data_version_3.gz", "animal_label_version_3.gz"):
        with gzip.open(folder / name, "rb") as f:
            arrays.append(_ArraysOnly(io.BytesIO(f.read())).load())
    images, labels = np.asarray(arrays[0], dtype=np.uint8), np.asarray(arrays[1], dtype=np.int64)
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,), (images.shape, labels.shape)
    return images, labels


def animal_shape_folder(out: Path, train_per_class: int = 800) -> Path:
    """Write Animal-Shape as ``out/train/<class>/*.png`` and ``out/test/<class>/*.png`` (once); return ``out``."""
    from PIL import Image

    done = out / ".complete"
    if done.is_file():
        return out
    images, labels = load_animal_shape()
    for c, name in enumerate(ANIMAL_CLASSES):
        idx = np.flatnonzero(labels == c)
        for split, part in (("train", idx[:train_per_class]), ("test", idx[train_per_class:])):
            d = out / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in part:
                Image.fromarray(images[i], mode="L").save(d / f"{i:05d}.png")
    done.write_text("ok\n")
    return out


def _write_idx(path: Path, array: np.ndarray) -> None:
    """An idx file (gzip): magic 0, 0, 0x08 (uint8), ndim, big-endian dims, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    with gzip.open(path, "wb") as f:
        f.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def animal_shape_idx(out: Path, train_per_class: int = 800) -> Path:
    """Animal-Shape as one-channel idx files in Fashion-MNIST's layout (``data.source=fashion_mnist
    data.root=out``), with the same train/test split as :func:`animal_shape_folder`: a one-channel model
    (the quickstart's) continues on it as it is. Written once; returns ``out``."""
    done = out / ".complete"
    if done.is_file():
        return out
    images, labels = load_animal_shape()
    split = {"train": [], "t10k": []}
    for c in range(len(ANIMAL_CLASSES)):
        idx = np.flatnonzero(labels == c)
        split["train"].append(idx[:train_per_class])
        split["t10k"].append(idx[train_per_class:])
    out.mkdir(parents=True, exist_ok=True)
    for prefix, parts in split.items():
        order = np.random.default_rng(0).permutation(np.concatenate(parts))  # classes mixed, as in Fashion-MNIST
        _write_idx(out / f"{prefix}-images-idx3-ubyte.gz", images[order])
        _write_idx(out / f"{prefix}-labels-idx1-ubyte.gz", labels[order].astype(np.uint8))
    done.write_text("ok\n")
    return out


if __name__ == "__main__":
    import sys

    print(animal_shape_folder(Path(sys.argv[1] if len(sys.argv) > 1 else "data/animal_shape")))
