"""Metric sinks: TensorBoard event files and an offline W&B run hold the metrics.jsonl records, for
pretraining and fine-tuning alike; read back from their own files."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from dinolite.cli import main
from tests.helpers import tiny_overrides


def tensorboard_scalars(folder: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def wandb_history(run_dir: Path) -> list[dict]:
    """The history records of the offline W&B run under ``run_dir/wandb``, read from its .wandb file: a
    7-byte header (":W&B", magic, version), then 32 KiB blocks of records, each a 7-byte header (CRC32,
    length, type: full / first / middle / last) and a piece of a protobuf ``Record``."""
    from wandb.proto import wandb_internal_pb2

    (path,) = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, chunks, pending = 7, 32768, [], b""
    while pos + 7 <= len(data):
        room = block - pos % block
        if room < 7:
            pos += room
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        piece = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            chunks.append(piece)
        elif kind == 2:
            pending = piece
        elif kind == 3:
            pending += piece
        elif kind == 4:
            chunks.append(pending + piece)
        elif kind == 0 and length == 0:  # zero padding up to the end of the block
            pos += block - pos % block if pos % block else 0
    rows = []
    for chunk in chunks:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(chunk)
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item})
    return rows


def jsonl(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_pretraining_writes_tensorboard_and_an_offline_wandb_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    assert main(["pretrain", "--no-progress", *tiny_overrides(run, **{"train.loggers": "[jsonl,tensorboard,wandb]"})]) == 0
    steps = [r for r in jsonl(run) if "loss" in r]
    scalars = tensorboard_scalars(run / "tensorboard")
    assert {s["step"]: s["loss"] for s in steps} == pytest.approx(scalars["loss"])
    assert scalars["teacher_entropy"].keys() == {s["step"] for s in steps}
    assert "knn_top1" in scalars  # the final k-NN too
    history = wandb_history(run)
    logged = {int(h["_step"]): h for h in history}
    for s in steps:
        assert logged[s["step"]]["loss"] == pytest.approx(s["loss"])
        assert logged[s["step"]]["lr"] == pytest.approx(s["lr"])
    assert (run / "wandb_id.txt").is_file()


def test_finetuning_writes_tensorboard_too(tmp_path):
    from tests.finetune.helpers import ft_overrides, write_tiny_backbone

    init = write_tiny_backbone(tmp_path / "backbone.safetensors")
    out = tmp_path / "ft"
    assert main(["finetune", *ft_overrides(out, init, "supervised", **{"train.loggers": "[jsonl,tensorboard]"})]) == 0
    records = [r for r in jsonl(out) if "loss" in r]
    scalars = tensorboard_scalars(out / "tensorboard")
    assert records and {r["step"]: r["loss"] for r in records} == pytest.approx(scalars["loss"])


def test_an_unknown_logger_is_one_line(tmp_path, capsys):
    assert main(["pretrain", "--no-progress", *tiny_overrides(tmp_path / "r", **{"train.loggers": "[jsonl,mlflow]"})]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.loggers must list jsonl, tensorboard and/or wandb" in err[0]
