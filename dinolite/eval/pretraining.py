"""The evaluations of a pretraining run: the baselines it is measured against, the online k-NN, and the
final weighted k-NN (train split as bank, test split as queries)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from ..config import Config, ModelConfig, as_dict
from ..data import build_source
from ..data.base import Source
from ..distributed import DistInfo
from ..files import write_text
from ..maths.augment import EvalTransform
from ..maths.models import build_backbone
from .evaluated import Evaluated
from .features import RawPixels, extract_rows, left_out_line
from .knn import knn_accuracy
from .online import OnlineKNN

BASELINES = "baselines.json"


class RunEvaluation:
    """k-NN evaluations of one run's backbones on its configured data (``eval.*`` settings)."""

    def __init__(self, cfg: Config, source: Source, device: torch.device, dist: DistInfo, progress: bool,
                 run_dir: Path):
        self.cfg, self.source, self.device, self.dist, self.progress, self.run_dir = \
            cfg, source, device, dist, progress, run_dir
        self.warned: set[str] = set()  # the splits whose unreadable images were reported

    def transform(self) -> EvalTransform:
        e = self.cfg.eval
        return EvalTransform(e.image_size, e.crop_ratio, self.cfg.augment.mean, self.cfg.augment.std).to(self.device)

    def online_knn(self) -> OnlineKNN | None:
        """The online k-NN on a fixed labelled subset, when asked for and the data allow it (indexable, labelled)."""
        e = self.cfg.eval
        if not e.online_every:
            return None
        if not hasattr(self.source, "__getitem__"):
            if self.dist.is_main:
                print(f"note: no online k-NN (eval.online_every={e.online_every}): it needs an indexable source "
                      f"(folder or fashion_mnist), not {self.cfg.data.source}", flush=True)
            return None
        test = build_source(self.cfg.data, "test")
        return OnlineKNN(self.source, test, self.transform(), self.device, e.online_bank, e.online_queries,
                         e.knn_k, e.knn_temperature, e.batch_size, self.cfg.data.num_workers)

    def knn(self, backbone: torch.nn.Module, desc: str) -> dict[str, float]:
        """Weighted k-NN top-1/top-5 of ``backbone``: train split as bank, test split as queries."""
        e = self.cfg.eval
        transform = self.transform()
        test = build_source(self.cfg.data, "test")
        workers = self.cfg.data.num_workers
        bank = extract_rows(backbone, self.source, transform, self.device, batch_size=e.batch_size,
                            num_workers=workers, progress=self.progress, desc=f"{desc} bank")
        queries = extract_rows(backbone, test, transform, self.device, batch_size=e.batch_size,
                               num_workers=workers, progress=self.progress, desc=f"{desc} queries")
        if not self.dist.is_main:  # every rank extracted its share of the features; rank 0 scores them
            return {"top1": float("nan"), "top5": float("nan")}
        for split, got in (("train", bank), ("test", queries)):
            if got.left_out and split not in self.warned:  # once per run, not once per backbone scored
                self.warned.add(split)
                print(f"warning: k-NN: {left_out_line(split, got.unreadable, got.missing, len(got.labels))}",
                      file=sys.stderr, flush=True)
        return knn_accuracy(queries.features, queries.labels, bank.features, bank.labels, self.source.num_classes,
                            e.knn_k, e.knn_temperature)

    def random_backbone(self, model: ModelConfig | None = None) -> torch.nn.Module:
        """The same architecture (``model``, default the run's) at random initialisation (its own seed, the
        global stream untouched)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.train.seed + 1)
            return build_backbone(model or self.cfg.model, self.source.channels, self.cfg.augment.global_crops_size,
                                  0.0).to(self.device)

    def baselines(self, online: OnlineKNN | None, evaluated: list[Evaluated],
                  reference: dict[str, torch.nn.Module] | None = None) -> dict[str, float]:
        """What "learned something" is measured against, computed once at the start of a run and kept in
        ``baselines.json``: for each trained backbone the k-NN of its architecture at random init (the final
        protocol) and its random-init online k-NN; the k-NN of raw pixels and of any ``reference`` backbone
        (a distillation's teacher); and how long each took (the time budget keeps that much for the end)."""
        e, path = self.cfg.eval, self.run_dir / BASELINES
        key = {"data": as_dict(self.cfg.data), "eval": as_dict(e), "model": as_dict(self.cfg.model),
               "seed": self.cfg.train.seed}
        if self.cfg.distill.teacher:
            key["distill"] = as_dict(self.cfg.distill)
        if path.is_file():
            saved = json.loads(path.read_text())
            if saved.get("key") == key:
                return saved["values"]
        values: dict[str, float] = {}
        for ev in evaluated:
            random_init = self.random_backbone(ev.model)
            if e.knn_at_end and e.knn_random_init:
                t = time.time()
                values[f"knn_top1_random_init{ev.suffix}"] = self.knn(random_init, f"random init{ev.suffix}")["top1"]
                values["eval_seconds"] = values.get("eval_seconds", 0.0) + time.time() - t
            if online is not None:
                t = time.time()
                values[f"knn_online_random_init{ev.suffix}"] = online(random_init)
                values["online_seconds"] = values.get("online_seconds", 0.0) + time.time() - t
        if e.knn_at_end:
            for name, backbone in (reference or {}).items():
                values[f"knn_top1_{name}"] = self.knn(backbone, name)["top1"]
        if e.knn_at_end and e.knn_pixels:
            values["knn_top1_pixels"] = self.knn(RawPixels(), "raw pixels")["top1"]
        if self.dist.is_main and values:
            write_text(path, json.dumps({"key": key, "values": values}, indent=1))
        return values


def knn_line(cfg: Config, results: dict[str, float], evaluated: list[Evaluated]) -> str:
    """The final line of a run: each trained backbone's k-NN beside what it must beat (its random init, a
    distillation's teacher, raw pixels)."""
    line = f"k-NN top-1 (k={cfg.eval.knn_k}, T={cfg.eval.knn_temperature}) on the test split: "
    if [ev.name for ev in evaluated] == ["teacher"]:  # DINO's teacher
        line += f"teacher {results['knn_top1']:.2f} %"
        if "knn_top1_random_init" in results:
            line += f", same architecture at random init {results['knn_top1_random_init']:.2f} %"
    else:  # distillation: each student, then its teacher
        students = []
        for ev in evaluated:
            random_init = results.get(f"knn_top1_random_init{ev.suffix}")
            students.append(f"student {ev.name} {results[f'knn_top1{ev.suffix}']:.2f} %"
                            + (f" (random init {random_init:.2f} %)" if random_init is not None else ""))
        line += "; ".join(students)
        if "knn_top1_teacher" in results:
            line += f"; its teacher {results['knn_top1_teacher']:.2f} %"
    if "knn_top1_pixels" in results:
        line += f", raw pixels {results['knn_top1_pixels']:.2f} %"
    return line
