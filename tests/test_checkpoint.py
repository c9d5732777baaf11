"""Atomic writes, newest-valid lookup, safe loading."""

import pickle

import pytest
import torch

from dinolite import checkpoint as ckpt


def test_interrupted_write_leaves_previous_checkpoint_loadable(tmp_path, monkeypatch):
    ckpt.save_checkpoint({"step": 1, "w": torch.ones(3)}, tmp_path, 1)
    real_save = torch.save

    def crash_mid_write(obj, f, *a, **k):
        f.write(b"PK\x03\x04 partial bytes of a checkpoint")  # part of a file, then the process dies
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash_mid_write)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint({"step": 2, "w": torch.zeros(3)}, tmp_path, 2)
    monkeypatch.setattr(torch, "save", real_save)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["checkpoint-00000001.pt"]
    assert not [p for p in tmp_path.iterdir() if "tmp" in p.name]
    path, state = ckpt.latest_valid(tmp_path)
    assert state["step"] == 1 and torch.equal(state["w"], torch.ones(3))


def test_corrupt_newest_checkpoint_falls_back_to_previous(tmp_path):
    ckpt.save_checkpoint({"step": 1}, tmp_path, 1)
    ckpt.checkpoint_path(tmp_path, 2).write_bytes(b"not a checkpoint")  # e.g. copied half-way by hand
    with pytest.warns(UserWarning, match="skipping unreadable checkpoint"):
        path, state = ckpt.latest_valid(tmp_path)
    assert state["step"] == 1 and path.name == "checkpoint-00000001.pt"


def test_keeps_only_the_newest(tmp_path):
    for step in (1, 2, 3, 4):
        ckpt.save_checkpoint({"step": step}, tmp_path, step, keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["checkpoint-00000003.pt", "checkpoint-00000004.pt"]


class Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def test_loading_refuses_pickled_code(tmp_path):
    path = tmp_path / "checkpoint-00000001.pt"
    torch.save({"evil": Payload()}, path)
    with pytest.raises(pickle.UnpicklingError):
        ckpt.load(path)
