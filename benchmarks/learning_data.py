"""Real datasets for the learning benchmark that this machine has without a download at run time.

- Fashion-MNIST (Debian package ``dataset-fashion-mnist``), whole or as its first N training images.
- Animal-Shape (PyPI package ``animal-shape-mnist``, MIT licence): 10,000 real 28 x 28 grayscale
  animal silhouettes, 10 classes of 1,000 (bear, bird, cat, cow, dog, elephant, giraffe, horse, sheep,
  zebra). Install it with ``pip install --no-deps animal-shape-mnist`` (its loader module imports
  TensorFlow; only its data files are read here). :func:`animal_shape_folder` writes it once as an
  image folder, 800 training and 200 test images per class.
- Digits (scikit-learn's ``load_digits``, the UCI optical-recognition digits, BSD licence): 1,797 real
  8 x 8 handwritten digits (pixel values 0..16), shipped inside the scikit-learn wheel, so nothing is
  downloaded at run time (``pip install scikit-learn``; benchmarks only, not a dinolite dependency).
  :func:`digits_folder` writes it once as an image folder of 28 x 28 grey PNGs (values scaled to
  0..255, bilinear upscaling) with a fixed, seeded, stratified split: 1,297 training and 500 test
  images, and its training pixels' mean and std (``stats.json``) for ``augment.mean/std``.

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


DIGITS_TEST = 500
DIGITS_SIZE = 28


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [1797, 28, 28], labels int64 [1797])``: scikit-learn's 8 x 8 digits (values 0..16)
    scaled to 0..255 and upscaled (bilinear) to 28 x 28, Fashion-MNIST's size."""
    from PIL import Image

    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as e:
        raise SystemExit("the digits dataset needs scikit-learn: pip install scikit-learn") from e
    bunch = sk_load_digits()
    small = np.clip(np.rint(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    images = np.stack([np.asarray(Image.fromarray(im).resize((DIGITS_SIZE, DIGITS_SIZE),
                                                                       Image.Resampling.BILINEAR))
                       for im in small])
    labels = np.asarray(bunch.target, dtype=np.int64)
    assert images.shape == (1797, DIGITS_SIZE, DIGITS_SIZE) and labels.shape == (1797,), (images.shape, labels.shape)
    return images, labels


def digits_split(labels: np.ndarray, n_test: int = DIGITS_TEST, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)`` of a stratified split (each class's share of the test split is its share of
    the data), fixed by ``seed``; both sorted."""
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(np.arange(len(labels)), test_size=n_test, stratify=labels, random_state=seed)
    return np.sort(train), np.sort(test)


def digits_folder(out: Path, n_test: int = DIGITS_TEST, seed: int = 0) -> Path:
    """Write the digits as ``out/train/<digit>/*.png`` and ``out/test/<digit>/*.png`` with ``out/stats.json``
    (the training images' pixel mean and std in 0..1, and the split's sizes), once; return ``out``."""
    import json

    from PIL import Image

    done = out / ".complete"
    if done.is_file():
        return out
    images, labels = load_digits()
    train, test = digits_split(labels, n_test, seed)
    for split, part in (("train", train), ("test", test)):
        for i in part:
            d = out / split / str(labels[i])
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i]).save(d / f"{i:04d}.png")
    pixels = images[train].astype(np.float64) / 255.0
    stats = {"mean": round(float(pixels.mean()), 3), "std": round(float(pixels.std()), 3),
             "train": int(len(train)), "test": int(len(test)), "seed": seed, "size": DIGITS_SIZE}
    (out / "stats.json").write_text(json.dumps(stats, indent=1) + "\n")
    done.write_text("ok\n")
    return out


def folder_stats(out: Path) -> dict:
    """The ``stats.json`` that :func:`digits_folder` wrote."""
    import json

    return json.loads((out / "stats.json").read_text())


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


def digits_idx(out: Path, n_test: int = DIGITS_TEST, seed: int = 0) -> tuple[Path, dict]:
    """The digits as one-channel idx files in Fashion-MNIST's layout, with :func:`digits_split`'s split, and the
    training pixels' ``{"mean", "std"}`` (0..1). Written once; returns ``(out, stats)``."""
    import json

    images, labels = load_digits()
    train, test = digits_split(labels, n_test, seed)
    pixels = images[train].astype(np.float64) / 255.0
    stats = {"mean": round(float(pixels.mean()), 3), "std": round(float(pixels.std()), 3)}
    if not (out / ".complete").is_file():
        out.mkdir(parents=True, exist_ok=True)
        for prefix, part in (("train", train), ("t10k", test)):
            _write_idx(out / f"{prefix}-images-idx3-ubyte.gz", images[part])
            _write_idx(out / f"{prefix}-labels-idx1-ubyte.gz", labels[part].astype(np.uint8))
        (out / "stats.json").write_text(json.dumps(stats) + "\n")
        (out / ".complete").write_text("ok\n")
    return out, stats


if __name__ == "__main__":
    import sys

    print(animal_shape_folder(Path(sys.argv[1] if len(sys.argv) > 1 else "data/animal_shape")))
    print(digits_folder(Path(sys.argv[2] if len(sys.argv) > 2 else "data/digits")))
