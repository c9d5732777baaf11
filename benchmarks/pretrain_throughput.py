"""DINO pretraining throughput on one device: a CPU-fed torchvision baseline against dinolite.

Makes its own data: ``--images`` synthetic JPEGs at ImageNet-like sizes (longer side 333-500 px by
default, cut from matplotlib's sample photo with grain, or PIL-generated content where that file is
missing), written as webdataset shards with dinolite's shard writer. Then, in one run on the current
device, with one model (``--arch``, DINO head of ``--out-dim``, AdamW, EMA teacher, bf16 autocast on
CUDA) built as dinolite's ``DINOMethod`` (the one DINO step of ``dinolite pretrain``) from a
``data.source=shards`` config, with no run directory, evaluation or engine around it:

  (a) baseline: DINO's multi-crop as torchvision.transforms.v2 on PIL images (RandomResizedCrop,
      flip, ColorJitter p=0.8, grayscale p=0.2, PIL Gaussian blur with the per-view rates, solarize
      on the 2nd global view), decoded from the same shards by webdataset in DataLoader workers,
      feeding the same step (``DINOMethod.train_step`` with the crops handed in);
  (b) dinolite's ``MultiCrop`` alone, on a uint8 batch already on the device;
  (c) the model step alone (``DINOMethod.train_step`` with crops already on the device): student and
      teacher forward, DINO loss, backward, clipping, AdamW, teacher EMA;
  (d) dinolite end to end: ``DINOMethod.make_crops`` + ``train_step`` over dinolite's shard loader (shards decoded to
      bounded uint8 by CPU workers, one copy to the device, on-device multi-crop, the step).

Each part reports images/s, FLOP/s and MFU (FLOPs of one step counted with
``torch.utils.flop_counter.FlopCounterMode``; MFU = achieved FLOP/s / ``--peak-tflops``, never above 100 %:
a part faster than the peak raises it, flagged in ``config.peak_raised``; see ``Bench.bound_peak``), and peak
device memory; (d) also the share of the step spent in the augmentation (CUDA events around it) and
the time the host waited for data. Loader-fed parts warm up past the DataLoader's prefetch queue so
the timed steps see the loader's steady rate. JSON is rewritten after every part, so a run cut short
still leaves figures. Usage (the H100 run; see docs/performance.md)::

    PYTHONPATH=$PWD python3 benchmarks/pretrain_throughput.py [--compile] [--profile]
"""

from __future__ import annotations

import argparse
import io
import json
import math
import multiprocessing
import os
import platform
import random
import re
import sys
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

import torch
from PIL import Image, ImageFilter
from torch.utils.flop_counter import FlopCounterMode

from dinolite.config import load_config
from dinolite.data import build_loader, build_source
from dinolite.data.shard_writer import Sample, SampleSource, write_shards
from dinolite.data.shards import ShardLoader
from dinolite.engine.runtime import resolve_device, run_threads, to_device_ahead
from dinolite.maths.augment import Crops
from dinolite.maths.schedules import Plan
from dinolite.methods.dino import DINOMethod, Schedule

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic_images import load_photo, random_size, synthetic_picture  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
H100_BF16_DENSE_TFLOPS = 989.0  # NVIDIA's H100 SXM spec (dense bf16); H200 has the same compute
PREFETCH = 2  # DataLoader prefetch_factor of the baseline (ShardLoader uses the same)


# ---- synthetic data ------------------------------------------------------------------------------

_PHOTO: Image.Image | None = None


def _jpeg(job: tuple[int, int, int, int]) -> Sample:
    """One JPEG sample: random size and aspect, a photo crop with grain (or shapes on noise)."""
    i, seed, lo, hi = job
    rng = random.Random(seed * 7_919 + i)
    w, h = random_size(rng, lo, hi)
    buf = io.BytesIO()
    synthetic_picture(rng, w, h, _PHOTO, grain=0.15).save(buf, format="JPEG", quality=90)
    return Sample(f"{i:08d}", "jpg", buf.getvalue(), i % 10, max(w, h))


def make_shards(out: Path, n: int, sides: tuple[int, int], per_shard: int, seed: int = 0) -> dict:
    """Write ``n`` synthetic JPEGs as shards (in parallel where there are cores); returns stats."""
    global _PHOTO
    _PHOTO = load_photo()
    jobs = [(i, seed, sides[0], sides[1]) for i in range(n)]
    procs = min(16, (os.cpu_count() or 1))
    nbytes = [0]

    def samples(it):
        for s in it:
            nbytes[0] += len(s.data)
            yield s

    t0 = time.perf_counter()
    if procs > 2 and n >= 256:  # fork before any CUDA work: the pool only runs PIL
        with multiprocessing.get_context("fork").Pool(procs) as pool:
            it = pool.imap(_jpeg, jobs, chunksize=32)
            manifest = write_shards(SampleSource(samples(it), [f"c{k}" for k in range(10)], 3, "synthetic", []),
                                    out, "bench", per_shard, 10**10)
    else:
        manifest = write_shards(SampleSource(samples(map(_jpeg, jobs)), [f"c{k}" for k in range(10)], 3,
                                             "synthetic", []), out, "bench", per_shard, 10**10)
    return {"images": manifest["total"], "shards": len(manifest["shards"]), "mean_kib": nbytes[0] / n / 1024,
            "longer_side": list(sides),
            "content": "photo crops + grain" if _PHOTO is not None else "PIL shapes + noise",
            "seconds_to_make": round(time.perf_counter() - t0, 2)}


# ---- (a) the CPU baseline: DINO's torchvision multi-crop in DataLoader workers ---------------------

class PILBlur:
    """DINO's GaussianBlur: PIL's blur with a radius uniform in ``[lo, hi]``, applied with probability ``p``."""

    def __init__(self, p: float, lo: float, hi: float):
        self.p, self.lo, self.hi = p, lo, hi

    def __call__(self, img):
        if random.random() >= self.p:
            return img
        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(self.lo, self.hi)))


class TorchvisionMultiCrop:
    """DINO's ``DataAugmentationDINO`` written with torchvision.transforms.v2 on PIL images.

    Returns the ``2 + local_crops_number`` normalised float views of one image.
    """

    def __init__(self, a):
        from torchvision.transforms import InterpolationMode, v2

        bicubic = InterpolationMode.BICUBIC
        flip_jitter = [v2.RandomHorizontalFlip(p=a.flip_p),
                       v2.RandomApply([v2.ColorJitter(a.brightness, a.contrast, a.saturation, a.hue)], p=a.jitter_p),
                       v2.RandomGrayscale(p=a.grayscale_p)]
        norm = [v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(a.mean, a.std)]
        lo, hi = a.blur_sigma
        p1, p2, pl = a.blur_p
        self.g1 = v2.Compose([v2.RandomResizedCrop(a.global_crops_size, scale=tuple(a.global_crops_scale),
                                                   interpolation=bicubic, antialias=True),
                              *flip_jitter, PILBlur(p1, lo, hi), *norm])
        self.g2 = v2.Compose([v2.RandomResizedCrop(a.global_crops_size, scale=tuple(a.global_crops_scale),
                                                   interpolation=bicubic, antialias=True),
                              *flip_jitter, PILBlur(p2, lo, hi), v2.RandomSolarize(128, p=a.solarize_p), *norm])
        self.local = v2.Compose([v2.RandomResizedCrop(a.local_crops_size, scale=tuple(a.local_crops_scale),
                                                      interpolation=bicubic, antialias=True),
                                 *flip_jitter, PILBlur(pl, lo, hi), *norm])
        self.n_local = a.local_crops_number

    def __call__(self, sample):
        img = Image.open(io.BytesIO(sample[0])).convert("RGB")  # full-resolution decode, as DINO's ImageFolder
        return [self.g1(img), self.g2(img)] + [self.local(img) for _ in range(self.n_local)]


def collate_views(samples: list[list[torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """View-major stacks (view 0 of every sample first), made in the worker: globals, locals."""
    n_views = len(samples[0])
    globals_ = torch.stack([s[v] for v in range(2) for s in samples])
    locals_ = torch.stack([s[v] for v in range(2, n_views) for s in samples]) if n_views > 2 else None
    return globals_, locals_


def baseline_loader(shard_dir: Path, cfg, batch: int, workers: int, pin: bool):
    import webdataset as wds

    urls = sorted(str(p) for p in shard_dir.glob("bench-*.tar"))
    ds = (wds.WebDataset(urls, resampled=True, shardshuffle=False, empty_check=False)
          .to_tuple("jpg").map(TorchvisionMultiCrop(cfg.augment)))
    return torch.utils.data.DataLoader(ds, batch_size=batch, num_workers=workers, collate_fn=collate_views,
                                       pin_memory=pin, prefetch_factor=PREFETCH if workers else None)


# ---- helpers around the real DINO method ----------------------------------------------------------

class TimedAugment:
    """Wraps the augmentation (``DINOMethod.make_crops``): records the device time of each call (CUDA
    events: no host synchronisation)."""

    def __init__(self, augment, device: torch.device):
        self.augment, self.cuda = augment, device.type == "cuda"
        self.events: list = []
        self.cpu_seconds = 0.0

    def __call__(self, *args) -> Crops:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = self.augment(*args)
            end.record()
            self.events.append((start, end))
            return out
        t0 = time.perf_counter()
        out = self.augment(*args)
        self.cpu_seconds += time.perf_counter() - t0
        return out

    def reset(self) -> None:
        self.events, self.cpu_seconds = [], 0.0

    def seconds(self) -> float:
        """Total time inside the augmentation since ``reset`` (call after a synchronisation)."""
        return sum(s.elapsed_time(e) for s, e in self.events) / 1000 if self.cuda else self.cpu_seconds


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cpu_attention_formulas() -> dict:
    """FlopCounterMode knows the CUDA attention kernels but not the CPU flash kernel SDPA uses on CPU."""
    from torch.utils import flop_counter as fc

    aten = torch.ops.aten
    if not hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        return {}
    return {aten._scaled_dot_product_flash_attention_for_cpu:
            lambda q, k, v, *args, **kwargs: fc.sdpa_flop_count(q, k, v),
            aten._scaled_dot_product_flash_attention_for_cpu_backward:
            lambda grad, q, k, v, *args, **kwargs: fc.sdpa_backward_flop_count(grad, q, k, v)}


def count_flops(fn) -> int:
    """FLOPs of one call of ``fn`` (matrix products, convolutions, attention; not elementwise ops)."""
    with FlopCounterMode(display=False, custom_mapping=_cpu_attention_formulas()) as counter:
        fn()
    return int(counter.get_total_flops())


def matmul_tflops(device: torch.device) -> float:
    """Best rate of a large square matrix product (bf16 on CUDA, fp32 on CPU), in TFLOP/s."""
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (1024, torch.float32)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best = math.inf
    for _ in range(10):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(4):
            a @ b
        sync(device)
        best = min(best, (time.perf_counter() - t0) / 4)
    return 2 * n**3 / best / 1e12


def memory_reset(device: torch.device) -> None:
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)


def memory_peak(device: torch.device) -> dict:
    if device.type != "cuda":
        return {"peak_memory_gb": None, "peak_reserved_gb": None}
    return {"peak_memory_gb": round(torch.cuda.max_memory_allocated(device) / 1e9, 3),
            "peak_reserved_gb": round(torch.cuda.max_memory_reserved(device) / 1e9, 3)}


def rates(images: int, seconds: float, flops_per_step: int | None, steps: int, peak_tflops: float) -> dict:
    out = {"images_per_s": round(images / seconds, 2), "seconds": round(seconds, 4)}
    if flops_per_step is not None:
        flops = flops_per_step * steps / seconds
        # significant figures, not decimals: a slow part (the blur's few FLOPs on a busy CPU) stays above 0
        out.update(flops_per_step=flops_per_step, tflops_per_s=float(f"{flops / 1e12:.4g}"),
                   mfu=float(f"{flops / (peak_tflops * 1e12):.4g}"))
    return out


def timed_loop(step, n: int, device: torch.device, sync_every: int):
    """Seconds for ``n`` calls of ``step(i)``, synchronising every ``sync_every`` steps (as ``fit`` does
    once per log interval) and at the end."""
    sync(device)
    t0 = time.perf_counter()
    for i in range(n):
        step(i)
        if (i + 1) % sync_every == 0:
            sync(device)
    sync(device)
    return time.perf_counter() - t0


def batches_forever(loader):
    """Epoch after epoch of ``loader`` (a ``ShardLoader``)."""
    epoch = 0
    while True:
        yield from loader.epoch(epoch)
        epoch += 1


def count_syncs(fn) -> int | None:
    """Host synchronisations made by ``fn`` (CUDA sync debug mode); None where there is no CUDA."""
    if not torch.cuda.is_available():
        fn()
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message).lower() for w in caught)


# ---- the benchmark -------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="vit_small_patch16_224", help="timm model name (a ViT or a CNN)")
    ap.add_argument("--batch", type=int, default=64, help="images per step")
    ap.add_argument("--global-crops", type=int, default=2, choices=[2], help="DINO uses exactly 2 global views")
    ap.add_argument("--local-crops", type=int, default=8)
    ap.add_argument("--global-size", type=int, default=224)
    ap.add_argument("--local-size", type=int, default=96)
    ap.add_argument("--out-dim", type=int, default=65536)
    ap.add_argument("--steps", type=int, default=50, help="timed steps per part")
    ap.add_argument("--warmup", type=int, default=10,
                    help="untimed steps first (loader-fed parts take at least workers x prefetch + 2)")
    ap.add_argument("--sync-every", type=int, default=10, help="host synchronisation interval (fit's log_every)")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help=f"peak for MFU; default {H100_BF16_DENSE_TFLOPS:g} (H100 bf16 dense) on CUDA, "
                         "the measured fp32 matmul rate on CPU")
    ap.add_argument("--workers", type=int, default=None,
                    help="DataLoader workers for (a) and (d); default min(14, cores - 2)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the student and teacher backbones")
    ap.add_argument("--compile-augment", action="store_true",
                    help="also torch.compile MultiCrop (graph breaks at its random draws) for (b) and (d)")
    ap.add_argument("--no-side-stream", action="store_true",
                    help="(d): copy each batch in the step instead of on a side stream ahead of it, as fit() does")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--images", type=int, default=0,
                    help="synthetic JPEGs (0 = enough for one epoch of the loader-fed parts)")
    ap.add_argument("--sides", type=int, nargs=2, default=[333, 500], metavar=("MIN", "MAX"),
                    help="longer side of the synthetic JPEGs")
    ap.add_argument("--decode-size", type=int, default=256, help="data.decode_size for dinolite's loader")
    ap.add_argument("--per-shard", type=int, default=64, help="samples per shard")
    ap.add_argument("--parts", default="abcd", help="which parts to run, e.g. 'bcd'")
    ap.add_argument("--profile", action="store_true",
                    help="also profile a few end-to-end steps with torch.profiler (table next to the JSON)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads of the main process (0 = default)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="config overrides for the method, e.g. loss.ibot_weight=1 loss.centering=sinkhorn_knopp")
    ap.add_argument("--json", default=None,
                    help="output; default benchmarks/results/pretrain_throughput-<device>.json")
    args = ap.parse_args(argv)
    if args.workers is None:
        args.workers = max(0, min(14, (os.cpu_count() or 1) - 2))
    return args


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def build_method(args, shard_dir: Path):
    """dinolite's DINO method and shard loader for a ``data.source=shards`` config (no compile yet: FLOPs are
    counted eagerly first)."""
    overrides = {
        "data.source": "shards", "data.root": str(shard_dir), "data.num_workers": args.workers,
        "data.decode_size": args.decode_size,
        "augment.global_crops_size": args.global_size, "augment.local_crops_size": args.local_size,
        "augment.local_crops_number": args.local_crops,
        "model.arch": args.arch, "model.out_dim": args.out_dim,
        "optim.batch_size": args.batch, "optim.epochs": 100,
        "train.device": args.device, "train.threads": args.threads, "eval.knn_at_end": False,
    }
    cfg = load_config("vit_small_imagenet", [f"{k}={v}" for k, v in overrides.items()] + list(args.set))
    device = resolve_device(cfg.train.device)
    source = build_source(cfg.data, "train")
    loader = build_loader(source, cfg.optim.batch_size, cfg.train.seed, cfg.data.num_workers,
                          pin_memory=device.type == "cuda")
    return cfg, DINOMethod(cfg, source.channels, device), source, loader


class Bench:
    """One run: the synthetic shards, one ``DINOMethod``, and the four measurements on it."""

    def __init__(self, args: argparse.Namespace, tmp: Path):
        self.args = args
        self.warm_loader = max(args.warmup, args.workers * PREFETCH + 2)  # drain the prefetch queue first
        n_images = args.images or (self.warm_loader + args.steps + 1) * args.batch
        self.shard_dir = tmp / "shards"
        data = make_shards(self.shard_dir, n_images, tuple(args.sides), args.per_shard)
        print(f"data: {data['images']} JPEGs in {data['shards']} shards, {data['mean_kib']:.0f} KiB on average "
              f"({data['content']}, made in {data['seconds_to_make']} s)", flush=True)

        self.cfg, self.method, source, self.loader = build_method(args, self.shard_dir)
        m = self.method
        self.device, self.step = m.device, 0
        measured = matmul_tflops(self.device)
        cuda = self.device.type == "cuda"
        # the peak MFU is taken against: given, the spec, or the best measured matmul rate (re-measured at the
        # end with the same threads and dtype); bound_peak raises it to a faster part's rate, flagged
        self.base_peak = self.peak = args.peak_tflops or (H100_BF16_DENSE_TFLOPS if cuda else measured)
        self.peak_is_measured = not (args.peak_tflops or cuda)
        self.achieved: dict[str, float] = {}  # each part's FLOP/s, unrounded: what MFU is computed from
        peak_source = ("--peak-tflops" if args.peak_tflops else
                       "H100 bf16 dense spec" if cuda else "measured fp32 matmul on this CPU (best of start and end)")
        self.base_peak_source = peak_source
        name = torch.cuda.get_device_name(self.device) if cuda else "cpu"
        self.json_path = Path(args.json) if args.json else \
            RESULTS / f"pretrain_throughput-{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')}.json"
        self.result = {
            "device": device_label(self.device), "torch": torch.__version__, "cpu_count": os.cpu_count(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "config": {"arch": args.arch, "batch": args.batch, "global_crops": 2, "local_crops": args.local_crops,
                       "global_size": args.global_size, "local_size": args.local_size, "out_dim": args.out_dim,
                       "steps": args.steps, "warmup": args.warmup, "warmup_loader_fed": self.warm_loader,
                       "sync_every": args.sync_every, "workers": args.workers, "compile": args.compile,
                       "compile_augment": args.compile_augment, "overrides": list(args.set),
                       "side_stream": not args.no_side_stream,
                       "decode_size": args.decode_size, "autocast_bf16": cuda,
                       "peak_tflops": self.peak, "peak_source": peak_source},
            "matmul_tflops_measured": round(measured, 3), "data": data, "parts": {},
        }

        plan = Plan.of(self.cfg.optim, self.cfg.loss, self.loader.steps_per_epoch)
        # the steady-state step: past the warm-up, the last layer no longer frozen
        self.sched = Schedule.at(self.cfg, plan.freeze_last_layer, plan, args.batch)
        self.multicrop = m.augment
        images, hw, _ = next(iter(ShardLoader(source, args.batch, seed=1).epoch(0)))
        self.images, self.hw = images.to(self.device), hw.to(self.device)
        crops = self.multicrop(self.images, self.hw, m.generator)
        self.device_crops = (crops.globals_, crops.locals_)

        # FLOPs counted once, eagerly: one whole step (forward, loss, backward; AdamW and EMA hold no
        # matrix products) and one MultiCrop call (where only the blur convolutions count).
        self.step_flops = count_flops(lambda: m.train_step(Crops(*self.device_crops), self.sched))
        self.aug_flops = count_flops(lambda: self.multicrop(self.images, self.hw, m.generator))
        self.result["model_gflop_per_image"] = round(self.step_flops / args.batch / 1e9, 2)
        print(f"model: {args.arch}, out_dim {args.out_dim}, {self.step_flops / 1e12:.3f} TFLOP per step of "
              f"{args.batch} images ({self.step_flops / args.batch / 1e9:.1f} GFLOP per image); device "
              f"{self.result['device']}; peak {self.peak:.1f} TFLOP/s ({peak_source}); matmul measured "
              f"{measured:.1f} TFLOP/s", flush=True)
        if args.compile:  # what train.compile=true does: in place, the backbones only
            m.student_module.backbone.compile()
            m.teacher.backbone.compile()
        if args.compile_augment:  # the method's own augmentation becomes the compiled module
            self.multicrop = m.augment = torch.compile(self.multicrop)

    def save(self) -> None:
        self.json_path.parent.mkdir(parents=True, exist_ok=True)
        self.json_path.write_text(json.dumps(self.result, indent=1) + "\n")

    def bound_peak(self) -> None:
        """Every part's MFU against a peak no part exceeds, so none is above 100 %.

        On a CPU the peak is an fp32 matmul rate measured for about a second at the start and at the end,
        while each part is timed over tens of seconds; on a machine shared with other processes (the
        committed CPU figures had a load average of 1.9 at the start and 4.0 at the end, on 2 cores) those
        two snapshots can both fall in busy moments and a part, timed in a quieter one, ran faster than the
        "peak" (MFU 103 %). A given peak (``--peak-tflops``, the CUDA spec) is exceeded only by a wrong peak
        or a wrong FLOP count. Either way the peak is no bound, so it is raised to the fastest part's
        achieved rate, and ``config.peak_raised`` and a WARNING line say so and by how much; MFU is then a
        share of the best rate seen, not of the machine's peak. Computed from the unrounded rates.
        """
        config, parts = self.result["config"], self.result["parts"]
        fastest = max(self.achieved, key=self.achieved.__getitem__, default=None)
        top = self.achieved[fastest] / 1e12 if fastest is not None else 0.0
        was = config.get("peak_raised", {}).get("part")
        self.peak = max(self.base_peak, top)
        config["peak_tflops"] = self.peak
        config["peak_source"] = self.base_peak_source
        config.pop("peak_raised", None)
        if fastest is not None and top > self.base_peak:
            why = ("the matmul rate was measured while the machine was busier than during this part (see the "
                   "load averages): it is no peak" if self.peak_is_measured else
                   "the given peak is below an achieved rate: check the peak and the FLOP count")
            config["peak_source"] += f"; raised to the achieved rate of {fastest}"
            config["peak_raised"] = {"part": fastest, "from_tflops": self.base_peak, "to_tflops": top, "why": why}
            if fastest != was:
                print(f"WARNING: {fastest} ran at {top:.4g} TFLOP/s, above the peak of {self.base_peak:.4g} "
                      f"({self.base_peak_source}): {why}; MFU is taken against {top:.4g} instead", flush=True)
        for key, part in parts.items():
            if key in self.achieved:
                part["mfu"] = float(f"{min(1.0, self.achieved[key] / (self.peak * 1e12)):.4g}")

    def given_crops_step(self, crops) -> None:
        """The model step alone (``DINOMethod.train_step``) on crops made elsewhere, copied to the device."""
        g, loc = crops
        self.method.train_step(Crops(g.to(self.device, non_blocking=True),
                                     None if loc is None else loc.to(self.device, non_blocking=True)),
                               self.next_schedule())

    def next_schedule(self) -> Schedule:
        """The steady-state schedule at the next step index (it seeds augmentation, masks and drop path)."""
        self.step += 1
        return replace(self.sched, step=self.sched.step + self.step)

    def record(self, key: str, what: str, seconds: float, flops: int, **extra) -> None:
        a = self.args
        self.result["parts"][key] = {"what": what, **rates(a.steps * a.batch, seconds, flops, a.steps, self.peak),
                                     **memory_peak(self.device), "host_syncs_per_step": self.syncs,
                                     "load_average": [round(x, 2) for x in os.getloadavg()], **extra}
        self.achieved[key] = flops * a.steps / seconds
        self.bound_peak()
        self.save()
        print_row(key, self.result["parts"][key])

    def measure(self, step, warmup: int, on_start=None) -> float:
        """Seconds for ``--steps`` calls of ``step`` after ``warmup`` untimed ones and one more untimed
        call that counts host synchronisations (CUDA only) into ``self.syncs``; ``on_start`` runs last."""
        for i in range(warmup):
            step(i)
        self.syncs = count_syncs(lambda: step(-1))
        memory_reset(self.device)
        if on_start is not None:
            on_start()
        return timed_loop(step, self.args.steps, self.device, self.args.sync_every)

    def cpu_baseline(self) -> None:
        """(a) torchvision multi-crop in DataLoader workers, crops handed to the same step."""
        a = self.args
        it = iter(baseline_loader(self.shard_dir, self.cfg, a.batch, a.workers, self.device.type == "cuda"))
        wait = [0.0]

        def step(_i):
            t0 = time.perf_counter()
            crops = next(it)
            wait[0] += time.perf_counter() - t0
            self.given_crops_step(crops)

        seconds = self.measure(step, self.warm_loader, on_start=lambda: wait.__setitem__(0, 0.0))
        self.record("a_cpu_baseline",
                    f"torchvision.transforms.v2 multi-crop in {a.workers} DataLoader workers (webdataset, PIL "
                    f"decode at full size) feeding the same step", seconds, self.step_flops,
                    host_wait_for_data_fraction=round(wait[0] / seconds, 4))
        it = None  # the baseline loader's workers go now, not at the end of the benchmark

    def multicrop_alone(self) -> None:
        """(b) MultiCrop on a uint8 batch already on the device."""
        a = self.args
        seconds = self.measure(lambda i: self.multicrop(self.images, self.hw, self.method.generator), a.warmup)
        self.record("b_multicrop", f"dinolite MultiCrop on a uint8 batch already on the device (2x{a.global_size} + "
                    f"{a.local_crops}x{a.local_size}; FLOPs: its blur convolutions only)", seconds, self.aug_flops)

    def model_step(self) -> None:
        """(c) The step with the crops already on the device."""
        seconds = self.measure(lambda i: self.given_crops_step(self.device_crops), self.args.warmup)
        self.record("c_model_step", "DINOMethod.train_step with the crops already on the device (student + "
                    "teacher forward, DINO loss, backward, clip, AdamW, EMA)", seconds, self.step_flops)

    def end_to_end(self) -> None:
        """(d) DINOMethod.make_crops then DINOMethod.train_step over dinolite's shard loader, the augmentation
        timed with CUDA events."""
        a = self.args
        m = self.method
        timed = TimedAugment(m.make_crops, self.device)
        batches = batches_forever(self.loader)
        if not a.no_side_stream:  # as fit() does
            batches = to_device_ahead(batches, self.device)
        wait = [0.0]

        def step(_i):
            t0 = time.perf_counter()
            images, hw, _ = next(batches)
            wait[0] += time.perf_counter() - t0
            sched = self.next_schedule()
            m.train_step(timed(images, hw, sched.step), sched)

        def start():
            wait[0] = 0.0
            timed.reset()

        seconds = self.measure(step, self.warm_loader, on_start=start)
        aug = timed.seconds()
        extra = {"augment_fraction": round(aug / seconds, 4), "augment_ms_per_step": round(aug / a.steps * 1000, 3),
                 "host_wait_for_data_fraction": round(wait[0] / seconds, 4)}
        if a.profile:
            extra["profile"] = str(profile_steps(step, 5, self.device, self.json_path))
        self.record("d_end_to_end", f"DINOMethod.make_crops + train_step over dinolite's shard loader: shards decoded "
                    f"to uint8 "
                    f"(<= {a.decode_size} px) in {a.workers} workers, one copy to the device, MultiCrop, the step",
                    seconds, self.step_flops, **extra)

    def summary(self) -> None:
        parts, r = self.result["parts"], self.result
        if "a_cpu_baseline" in parts and "d_end_to_end" in parts:
            r["speedup_end_to_end_vs_baseline"] = round(
                parts["d_end_to_end"]["images_per_s"] / parts["a_cpu_baseline"]["images_per_s"], 3)
        if "b_multicrop" in parts and "c_model_step" in parts:  # if augmentation and step simply added up
            b, c = parts["b_multicrop"]["images_per_s"], parts["c_model_step"]["images_per_s"]
            r["augment_share_from_b_and_c"] = round((1 / b) / (1 / b + 1 / c), 4)
        r["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        measured = matmul_tflops(self.device)
        r["matmul_tflops_measured_at_end"] = round(measured, 3)
        if self.peak_is_measured:  # a CPU busier at the start than at the end: the better figure
            self.base_peak = max(self.base_peak, measured)
        self.bound_peak()
        self.save()
        print(f"wrote {self.json_path}", flush=True)


def main(argv=None) -> dict:
    """Run the parts asked for (``--parts``, default all four) and return the JSON's content."""
    args = parse_args(argv)
    with run_threads(args.threads), tempfile.TemporaryDirectory(prefix="pretrain_throughput-") as tmp:
        bench = Bench(args, Path(tmp))
        parts = {"a": bench.cpu_baseline, "b": bench.multicrop_alone, "c": bench.model_step, "d": bench.end_to_end}
        for key in "abcd":
            if key in args.parts:
                parts[key]()
        bench.summary()
        return bench.result


_HEADER_PRINTED = [False]


def print_row(key: str, row: dict) -> None:
    names = {"a_cpu_baseline": "(a) CPU baseline (torchvision, workers)",
             "b_multicrop": "(b) MultiCrop alone (on device)",
             "c_model_step": "(c) model step alone (crops on device)",
             "d_end_to_end": "(d) dinolite end to end (shards)"}
    if not _HEADER_PRINTED[0]:
        print(f"{'part':<42} {'images/s':>10} {'TFLOP/s':>9} {'MFU %':>7} {'peak GB':>8}  notes", flush=True)
        _HEADER_PRINTED[0] = True
    mem = "-" if row.get("peak_memory_gb") is None else f"{row['peak_memory_gb']:.2f}"
    notes = []
    if "augment_fraction" in row:
        notes.append(f"augment {100 * row['augment_fraction']:.1f} % of the step")
    if row.get("host_syncs_per_step") is not None:
        notes.append(f"{row['host_syncs_per_step']} host syncs per step")
    if "host_wait_for_data_fraction" in row:
        notes.append(f"host waits for data {100 * row['host_wait_for_data_fraction']:.1f} %")
    print(f"{names[key]:<42} {row['images_per_s']:>10.1f} {row.get('tflops_per_s', 0):>9.3f} "
          f"{100 * row.get('mfu', 0):>7.2f} {mem:>8}  {'; '.join(notes)}", flush=True)


def profile_steps(step, n: int, device: torch.device, json_path: Path) -> Path:
    """``n`` more steps under torch.profiler; the op table (by device time) goes next to the JSON."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for i in range(n):
            step(i)
        sync(device)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    try:
        table = prof.key_averages().table(sort_by=sort, row_limit=40)
    except (AttributeError, KeyError, ValueError):
        table = prof.key_averages().table(sort_by="self_device_time_total", row_limit=40)
    path = json_path.with_name(json_path.stem + "-profile.txt")
    path.write_text(table + "\n")
    return path


if __name__ == "__main__":
    main()
