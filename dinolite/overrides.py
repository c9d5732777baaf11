"""``key=value`` items: the one grammar of every command's settings (``pretrain`` / ``finetune`` overrides
and the ``--data`` items of every command), and its one-line errors.

``apply`` merges items into a typed OmegaConf config; ``data_items`` reads ``--data``'s extra forms (a bare
data key is a ``data.`` key; a shortcut names a source). Every mistake is a UserError naming the item
and the fix: an item without ``=``, a value YAML cannot read, an unknown key, a value of the wrong type.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import cast

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import UserError

DATA_SHORTCUTS = "fashion_mnist[:ROOT], a shard directory (holding manifest.json) or an image folder root"  # --data


def yaml_problem(err: yaml.YAMLError) -> str:
    """The one-line gist of a YAML error: what went wrong and where."""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    mark = getattr(err, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


def omegaconf_problem(err: OmegaConfBaseException) -> str:
    """The first line of an OmegaConf error, with the full key it concerns."""
    msg = str(getattr(err, "msg", None) or err).strip().splitlines()[0]
    key = getattr(err, "full_key", None)
    return f"{msg} (key '{key}')" if key and key not in msg else msg


def is_item(item: str) -> bool:
    """``key=value`` with a non-empty key."""
    return "=" in item and not item.startswith("=")


def not_an_item(item: str, what: str, example: str, forms: str = "") -> UserError:
    """The error of an item in none of the accepted forms (``forms``: those besides key=value)."""
    return UserError(f"{what} {item!r} is not key=value{forms}: write e.g. {example}")


def apply(cfg: DictConfig, items: list[str], what: str, keys_hint: str, example: str,
          sections: tuple[str, ...] = ()) -> DictConfig:
    """``cfg`` with each ``key=value`` item merged in order, type-checked by its structured schema.

    ``what`` names the items in messages ("override", "--data item"); ``keys_hint`` says where the keys
    are documented; ``sections``, when given, are the only top-level keys the items may set.
    """
    for item in items:
        if not is_item(item):
            raise not_an_item(item, what, example)
    for item in items:
        section = item.split("=", 1)[0].split(".")[0]
        if sections and section not in sections:
            raise UserError(f"bad {what} {item!r}: {section} cannot be set here (only {', '.join(sections)}); "
                            f"see {keys_hint} for the keys and types")
        try:
            cfg = cast(DictConfig, OmegaConf.merge(cfg, OmegaConf.from_dotlist([item])))
        except yaml.YAMLError as err:
            raise UserError(f"{what} {item!r} is not a valid value ({yaml_problem(err)}): "
                            f"quote it or close its brackets, e.g. key=[1,2]") from None
        except (OmegaConfBaseException, ValueError, TypeError) as err:
            text = omegaconf_problem(err) if isinstance(err, OmegaConfBaseException) else str(err).splitlines()[0]
            raise UserError(f"bad {what} {item!r}: {text}; see {keys_hint} for the keys and types") from None
    return cfg


def data_items(items: list[str], schema: type) -> list[str]:
    """``--data`` items as ``key=value`` items of ``schema`` (``Config`` or ``FinetuneConfig``).

    A key without a dot that is not one of ``schema``'s top-level keys is a ``data.`` key (``root=/x``);
    other items pass unchanged (``eval.image_size=224``, ``method=layerwise``). A shortcut names a source:
    ``fashion_mnist[:ROOT]``, a shard directory (it holds manifest.json) or an image folder root.
    """
    top = {f.name for f in fields(schema)}
    out = []
    for item in items:
        if is_item(item):
            key = item.split("=", 1)[0]
            out.append(f"data.{item}" if "." not in key and key not in top else item)
        elif item == "fashion_mnist" or item.startswith("fashion_mnist:"):
            out.append("data.source=fashion_mnist")
            if ":" in item:
                out.append(f"data.root={item.split(':', 1)[1]}")
        elif Path(item).is_dir():
            kind = "shards" if (Path(item) / "manifest.json").is_file() else "folder"
            out += [f"data.source={kind}", f"data.root={item}"]
        else:
            raise not_an_item(item, "--data item", "root=/data/imagenet", f", {DATA_SHORTCUTS}")
    return out
