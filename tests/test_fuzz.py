"""Property-based fuzzing (hypothesis): generated config overrides, shard-manifest fields and weight-file
contents give either a result or a one-line UserError, never another exception, and nothing is written."""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dinolite.config import Config, load_config
from dinolite.data.shards import ShardSet
from dinolite.errors import UserError
from dinolite.weights import resolve

FUZZ = settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


def config_keys(cls=Config, prefix="") -> list[str]:
    keys = []
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            keys += config_keys(type(default), f"{prefix}{f.name}.")
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


VALUES = st.one_of(
    st.integers(min_value=-10**12, max_value=10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["true", "false", "null", "nan", "-inf", "[", "]", "[1,2", "{a: 1", "''", "'x'", "[0.1,0.2]",
                     "[1,2,3]", "[]", "{}", "'", ":", "- a", "0", "-1", "1e309", "three", "${oops}", "???"]),
    st.text(max_size=12),
    st.lists(st.floats(allow_nan=False, width=16, min_value=-5, max_value=5), max_size=4).map(lambda xs: json.dumps(xs)),
)


@FUZZ
@given(key=st.sampled_from(config_keys()), value=VALUES, extra=st.sampled_from(config_keys()), other=VALUES)
def test_config_overrides_load_or_give_one_line(key, value, extra, other):
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        try:
            cfg = load_config(None, [f"train.output_dir={run}", f"{key}={value}", f"{extra}={other}"])
        except UserError as err:
            assert "\n" not in str(err) and str(err)
        else:
            assert isinstance(cfg, Config)
        assert not run.exists()


def _manifest_value():
    return st.one_of(st.none(), st.booleans(), st.integers(-5, 10**9), st.floats(allow_nan=True), st.text(max_size=8),
                     st.lists(st.integers(-2, 3), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@pytest.fixture(scope="module")
def one_shard(tmp_path_factory, fmnist_root_module):
    from dinolite.cli import main

    out = tmp_path_factory.mktemp("shards")
    assert main(["shards", f"fashion_mnist:{fmnist_root_module}", "--out", str(out), "--subset", "16"]) == 0
    return out


@pytest.fixture(scope="module")
def fmnist_root_module():
    from tests.helpers import FMNIST

    assert (FMNIST / "train-images-idx3-ubyte.gz").is_file(), "apt-get install dataset-fashion-mnist"
    return FMNIST


@FUZZ
@given(field=st.sampled_from(["format", "version", "channels", "classes", "max_side", "total", "shards",
                              "shard.name", "shard.count", "shard.bytes"]),
       value=_manifest_value(), name=st.sampled_from(["x.tar", "../x.tar", "/etc/passwd", "", ".", "a/b.tar"]))
def test_manifest_fields_read_or_give_one_line(one_shard, field, value, name):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for f in one_shard.iterdir():
            shutil.copy(f, folder / f.name)
        data = json.loads((folder / "manifest.json").read_text())
        if field == "shard.name":
            data["shards"][0]["name"] = name if value is None else value
        elif field.startswith("shard."):
            data["shards"][0][field[6:]] = value
        else:
            data[field] = value
        (folder / "manifest.json").write_text(json.dumps(data))
        before = sorted(p.name for p in folder.iterdir())
        try:
            shards = ShardSet(str(folder), warn=False)
        except UserError as err:
            assert "\n" not in str(err)
        else:
            assert len(shards) >= 1
        assert sorted(p.name for p in folder.iterdir()) == before


@FUZZ
@given(content=st.one_of(st.binary(max_size=600),
                         st.builds(lambda b: b"PK\x03\x04" + b, st.binary(max_size=300)),  # zip-like (torch files)
                         st.builds(lambda n, b: n.to_bytes(8, "little") + b, st.integers(0, 2**20), st.binary(max_size=200))),
       suffix=st.sampled_from([".pt", ".pth", ".safetensors"]))
def test_weight_file_contents_load_or_give_one_line(content, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"weights{suffix}"
        path.write_bytes(content)
        try:
            resolve(path).build()
        except UserError as err:
            assert "\n" not in str(err)
        assert [p.name for p in Path(tmp).iterdir()] == [path.name]


@FUZZ
@given(info=st.dictionaries(st.sampled_from(["timm_model", "timm_kwargs", "file", "dinolite_config", "format"]),
                            _manifest_value(), max_size=5))
def test_export_config_json_loads_or_gives_one_line(info):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "config.json").write_text(json.dumps(info))
        (folder / "model.safetensors").write_bytes(b"")
        try:
            resolve(folder).build()
        except UserError as err:
            assert "\n" not in str(err)
