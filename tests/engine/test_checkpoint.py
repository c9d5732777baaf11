"""Atomic writes, newest-valid lookup, safe loading."""

import pickle

import pytest
import torch

from dinolite.engine import checkpoint as ckpt


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
    with pytest.warns(UserWarning, match="unreadable checkpoint"):
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


def test_retention_never_prunes_the_checkpoint_just_written(tmp_path):
    """Newer names (say, unreadable leftovers) do not make the new checkpoint the one that gets pruned."""
    ckpt.checkpoint_path(tmp_path, 50).write_bytes(b"junk")
    ckpt.checkpoint_path(tmp_path, 60).write_bytes(b"junk")
    path = ckpt.save_checkpoint({"step": 8}, tmp_path, 8, keep=2)
    assert path.exists() and ckpt.load(path)["step"] == 8


def test_unreadable_newer_checkpoints_are_moved_aside_by_the_trainer_only(tmp_path):
    ckpt.save_checkpoint({"step": 4}, tmp_path, 4)
    ckpt.checkpoint_path(tmp_path, 8).write_bytes(b"")
    with pytest.warns(UserWarning):
        assert ckpt.latest_valid(tmp_path)[1]["step"] == 4  # a reader leaves the folder as it is
    assert ckpt.checkpoint_path(tmp_path, 8).exists()
    with pytest.warns(UserWarning, match="moved the unreadable checkpoint-00000008.pt aside"):
        assert ckpt.latest_valid(tmp_path, move_aside=True)[1]["step"] == 4
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["checkpoint-00000004.pt"]
    assert (tmp_path / "checkpoint-00000008.pt.unreadable").exists()


def test_a_run_whose_checkpoints_all_fail_is_refused_not_restarted(tmp_path, capsys):
    """Found by hand: with every checkpoint unreadable, the run silently restarted at step 0."""
    from dinolite.cli import main
    from tests.helpers import tiny_overrides

    run = tmp_path / "run"
    assert main(["pretrain", "--no-progress", *tiny_overrides(run, **{"eval.knn_at_end": False})]) == 0
    for p in ckpt.list_checkpoints(run):
        p.write_bytes(p.read_bytes()[:100])  # truncated
    before = sorted((p.name, p.stat().st_size) for p in run.iterdir())
    capsys.readouterr()
    with pytest.warns(UserWarning):
        assert main(["pretrain", "--no-progress", *tiny_overrides(run, **{"eval.knn_at_end": False})]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "none of the 2 checkpoints" in err[0] and "start over" in err[0], err
    after = sorted((p.name, p.stat().st_size) for p in run.iterdir() if p.name != ".lock")
    assert after == [x for x in before if x[0] != ".lock"]


def test_newer_unreadable_checkpoints_do_not_cost_the_run_its_last_good_state(tmp_path, capsys):
    """Found by hand: unreadable newer checkpoints made pruning delete the checkpoint just written."""
    from dinolite.cli import main
    from tests.helpers import tiny_overrides

    run = tmp_path / "run"
    over = tiny_overrides(run, **{"eval.knn_at_end": False, "train.stop_after_steps": 4})
    assert main(["pretrain", "--no-progress", *over]) == 0
    for step in (90, 91):
        ckpt.checkpoint_path(run, step).write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning):
        assert main(["pretrain", "--no-progress", *tiny_overrides(run, **{"eval.knn_at_end": False})]) == 0
    names = [p.name for p in ckpt.list_checkpoints(run)]
    assert names[-1] == "checkpoint-00000008.pt" and all(ckpt.load(run / n) for n in names)
    assert sorted(p.name for p in run.glob("*.unreadable")) == ["checkpoint-00000090.pt.unreadable",
                                                               "checkpoint-00000091.pt.unreadable"]
