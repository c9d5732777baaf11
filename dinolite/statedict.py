"""State dicts checked against a model's own: every missing, unexpected or misshapen key named on one line.

Shared by every loader (``weights.load_into``, ``warmstart``, the backbone layouts of ``dinolite.layouts``), so a
file that does not fit a model reads the same wherever it is loaded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from torch import Tensor


def few(names: list[str], limit: int = 4) -> str:
    """At most ``limit`` names, then how many more."""
    return "; ".join(names[:limit]) + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def key_problems(own: Mapping[str, Tensor], given: Mapping[str, Tensor], optional: Iterable[str] = ()) -> str:
    """What keeps ``given`` from loading into a model whose state is ``own`` ("" when it fits): shapes that
    differ, keys the file lacks (those starting with one of ``optional`` excepted), keys the model lacks."""
    optional = tuple(optional)
    missing = [k for k in own if k not in given and not k.startswith(optional)]
    unexpected = [k for k in given if k not in own]
    shapes = [f"{k} {tuple(given[k].shape)} in the file, {tuple(own[k].shape)} here"
              for k in own if k in given and given[k].shape != own[k].shape]
    parts = [f"shapes differ: {few(shapes)}" if shapes else "", f"missing: {few(missing)}" if missing else "",
             f"not in this model: {few(unexpected)}" if unexpected else ""]
    return ", ".join(p for p in parts if p)


def is_tensor_dict(obj: object) -> bool:
    """A non-empty dict whose values are all tensors: a state dict."""
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, Tensor) for v in obj.values())


def inner_state(obj: object, keys: tuple[str, ...] = ("state_dict", "model")) -> object:
    """A checkpoint's state dict: ``obj`` itself when it is one, else its first entry under ``keys`` (the
    wrappers torch training scripts save it in), else ``obj`` unchanged for the caller to refuse."""
    if not isinstance(obj, dict) or is_tensor_dict(obj):
        return obj
    return next((obj[k] for k in keys if k in obj), obj)
