"""Batched on-device multi-crop: the DINO augmentation recipe for a whole batch in a few calls.

Every random parameter is drawn per sample from one ``torch.Generator`` (so a seed reproduces the
crops), and every op runs on the full batch of one resolution at once: one ``roi_align`` call cuts
and resamples all crops of a resolution, the colour ops are per-sample blends, and an op that a
sample should skip is applied with an identity parameter or masked out with ``torch.where``. No
Python loop runs over images, and no value is read back to the host.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from kornia.filters import gaussian_blur2d
from torch import Tensor, nn
from torchvision.ops import roi_align

from ..config import AugmentConfig

RATIO = (3 / 4, 4 / 3)  # aspect-ratio range of RandomResizedCrop, as in torchvision and DINO
_ATTEMPTS = 10


class GlobalBatchRNG:
    """Draws every random parameter for the whole global batch and keeps this rank's samples.

    Rank ``r`` of a data-parallel run holds samples ``offset .. offset + local`` of each global
    batch of ``total``. Drawing ``total`` values per view from a generator seeded the same on every
    rank, then slicing, gives each sample the same crops whatever the number of processes, so a
    2-process run reproduces a 1-process run with the same global batch. With one process
    (``total == local``) the stream is exactly ``torch.rand`` on the generator.
    """

    def __init__(self, generator: torch.Generator, offset: int, local: int, total: int):
        if not 0 <= offset <= total - local:
            raise ValueError(f"samples {offset}..{offset + local} do not fit in a global batch of {total}")
        self.generator, self.offset, self.local, self.total = generator, offset, local, total
        self.device = generator.device

    def rand(self, n: int, *extra: int) -> Tensor:
        """``[n, *extra]`` uniforms for ``n = views * local`` rows laid out view-major."""
        views, rest = divmod(n, self.local)
        if rest:
            raise ValueError(f"{n} rows are not whole views of {self.local} samples")
        u = torch.rand(views, self.total, *extra, generator=self.generator, device=self.device)
        return u[:, self.offset:self.offset + self.local].reshape(n, *extra)


RNG = torch.Generator | GlobalBatchRNG


def draw(g: RNG, n: int, *extra: int) -> Tensor:
    """``[n, *extra]`` uniforms from a generator, or this rank's rows of a global batch's draw."""
    if isinstance(g, GlobalBatchRNG):
        return g.rand(n, *extra)
    return torch.rand(n, *extra, generator=g, device=g.device)


def _uniform(n: int, low: float, high: float, g: RNG) -> Tensor:
    return draw(g, n) * (high - low) + low


def _bernoulli(p: Tensor | float, n: int, g: RNG) -> Tensor:
    return draw(g, n) < p


def sample_crop_boxes(hw: Tensor, scale: tuple[float, float], g: RNG,
                      ratio: tuple[float, float] = RATIO) -> Tensor:
    """RandomResizedCrop boxes ``[n, 4]`` as ``(x1, y1, x2, y2)`` in pixels, one per row of ``hw``.

    Same law as torchvision's: area fraction uniform in ``scale``, log aspect ratio uniform in
    ``ratio``, up to 10 tries for a box that fits, else the largest centred box whose aspect ratio
    lies in ``ratio``. All tries are drawn at once and the first one that fits is kept.
    """
    n = hw.shape[0]
    h, w = hw[:, 0:1].to(torch.float32), hw[:, 1:2].to(torch.float32)
    area = (h * w).expand(n, _ATTEMPTS)
    target = area * (draw(g, n, _ATTEMPTS) * (scale[1] - scale[0]) + scale[0])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    log_r = draw(g, n, _ATTEMPTS) * (log_hi - log_lo) + log_lo
    aspect = torch.exp(log_r)
    bw, bh = torch.sqrt(target * aspect), torch.sqrt(target / aspect)
    fits = (bw <= w) & (bh <= h)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # index of the first fitting try
    bw, bh = bw.gather(1, first).squeeze(1), bh.gather(1, first).squeeze(1)
    # Fallback where no try fits: the whole image, trimmed to the allowed aspect-ratio range.
    h1, w1 = h.squeeze(1), w.squeeze(1)
    in_ratio = w1 / h1
    fb_w = torch.where(in_ratio > ratio[1], h1 * ratio[1], w1)
    fb_h = torch.where(in_ratio < ratio[0], w1 / ratio[0], h1)
    any_fit = fits.any(dim=1)
    bw, bh = torch.where(any_fit, bw, fb_w), torch.where(any_fit, bh, fb_h)
    u = draw(g, n, 2)
    x1 = torch.where(any_fit, u[:, 0] * (w1 - bw), (w1 - bw) / 2)
    y1 = torch.where(any_fit, u[:, 1] * (h1 - bh), (h1 - bh) / 2)
    return torch.stack([x1, y1, x1 + bw, y1 + bh], dim=1)


def crop_resize(images: Tensor, boxes: Tensor, size: int) -> Tensor:
    """Cut ``boxes`` (``[V*B, 4]``, view-major) out of ``images`` (``[B, C, H, W]``) at ``size``.

    One ``roi_align`` call for all crops; its adaptive sampling averages several input pixels per
    output pixel where the crop shrinks, which acts as the antialiasing filter of a resize.
    """
    b = images.shape[0]
    index = torch.arange(boxes.shape[0], device=boxes.device, dtype=boxes.dtype).remainder_(b)
    rois = torch.cat([index[:, None], boxes], dim=1)
    return roi_align(images, rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)


def rgb_to_grayscale(x: Tensor) -> Tensor:
    """Luma with torchvision's weights (the ones DINO's pipeline used), shape ``[N, 1, H, W]``."""
    r, g, b = x.unbind(dim=1)
    return (0.2989 * r).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(1)


def _gray(x: Tensor) -> Tensor:
    return rgb_to_grayscale(x) if x.shape[1] == 3 else x


def adjust_hue(x: Tensor, hue: Tensor) -> Tensor:
    """torchvision's ``adjust_hue`` (HSV hue rotation by ``hue`` of the circle) per sample, in closed form.

    With v = max, c = max - min and the hue h in sextants, HSV -> RGB gives channel n (R 5, G 3, B 1)
    as v - c * clamp(min(k, 4 - k), 0, 1) with k = (n + h) mod 6: no HSV image is built, so it costs
    a fraction of an RGB -> HSV -> RGB round trip.
    """
    r, g, b = x.unbind(dim=1)
    maxc = torch.maximum(torch.maximum(r, g), b)
    c = maxc - torch.minimum(torch.minimum(r, g), b)
    cd = torch.where(c > 0, c, 1.0)
    h = torch.where(maxc == r, (g - b) / cd, torch.where(maxc == g, (b - r) / cd + 2, (r - g) / cd + 4))
    h = h.add_(hue.view(-1, 1, 1), alpha=6.0).unsqueeze(1)
    offsets = torch.arange(5.0, 0.0, -2.0, device=x.device).view(1, 3, 1, 1)  # R 5, G 3, B 1; made on the device
    k = (h + offsets).remainder_(6)
    return maxc.unsqueeze(1) - c.unsqueeze(1) * torch.minimum(k, 4 - k).clamp_(0, 1)


def _blend_step(x: Tensor, op: Tensor, brightness: Tensor, contrast: Tensor, saturation: Tensor) -> Tensor:
    """One jitter step: per sample brightness (op 0), contrast (1), saturation (2) or nothing (other).

    All three are torchvision's blend ``f * x + (1 - f) * m`` with m = 0, the grey mean, or the grey
    image, so the batch takes one ``lerp``; ``f = 1`` (no op) is an exact identity in ``lerp``.
    """
    colour = x.shape[1] == 3
    ones = torch.ones_like(brightness)
    f = torch.where(op == 0, brightness, torch.where(op == 1, contrast, ones))
    if colour:
        f = torch.where(op == 2, saturation, f)
    gray = _gray(x)
    mean = gray.mean(dim=(1, 2, 3), keepdim=True)
    op = op.view(-1, 1, 1, 1)
    m = torch.where(op == 1, mean, 0.0)
    if colour:
        m = torch.where(op == 2, gray, m)
    return torch.lerp(m, x, f.view(-1, 1, 1, 1)).clamp_(0, 1)


def color_jitter(x: Tensor, brightness: Tensor, contrast: Tensor, saturation: Tensor, hue: Tensor | None,
                 order: Tensor) -> Tensor:
    """torchvision's ColorJitter with per-sample factors and a per-sample order of the four ops.

    ``order[i]`` is a permutation of (0 brightness, 1 contrast, 2 saturation, 3 hue). Hue, the
    costly op, runs once on the whole batch: the cheap ops that come before it in a sample's order
    run first (three blend steps, a no-op where a sample has fewer), then hue, then the ones after.
    Saturation and hue leave a grey image unchanged and are skipped for one-channel inputs;
    ``hue=None`` skips hue.
    """
    if x.shape[1] != 3 or hue is None:
        for k in range(4):
            x = _blend_step(x, order[:, k], brightness, contrast, saturation)
        return x
    pos = (order == 3).to(torch.uint8).argmax(dim=1)  # hue's place in each sample's order
    skip = torch.full_like(order[:, 0], -1)
    for k in range(3):  # ops before hue
        x = _blend_step(x, torch.where(pos > k, order[:, k], skip), brightness, contrast, saturation)
    x = adjust_hue(x, hue)
    for k in range(1, 4):  # ops after hue
        x = _blend_step(x, torch.where(pos < k, order[:, k], skip), brightness, contrast, saturation)
    return x


def gaussian_blur(x: Tensor, sigma: Tensor, sigma_max: float) -> Tensor:
    """Separable Gaussian blur with a per-sample sigma (pixels); the kernel covers +-3 sigma_max.

    ``sigma_max`` comes from the config, not from ``sigma``, so no value is read back from the device.
    """
    size = x.shape[-1]
    k = max(3, min(2 * math.ceil(3 * sigma_max) + 1, size if size % 2 else size - 1))
    return gaussian_blur2d(x, (k, k), sigma[:, None].expand(-1, 2), border_type="reflect", separable=True)


def _per_view(p: list[float], b: int, device: torch.device) -> Tensor:
    """``[len(p) * b]`` rates, view-major, filled on the device: ``torch.tensor(p, device=cuda)``
    would copy from the host and wait for all queued work (a host synchronisation in every step)."""
    if len(set(p)) == 1:
        return torch.full((len(p) * b,), p[0], device=device)
    out = torch.empty(len(p), b, device=device)
    for k, value in enumerate(p):
        out[k].fill_(value)
    return out.view(-1)


@dataclass
class Crops:
    """The views of one batch, grouped by resolution, view-major (view 0 of every sample first)."""

    globals_: Tensor  # [2 * B, C, G, G]
    locals_: Tensor | None  # [N * B, C, L, L] or None when there are no local crops

    def by_resolution(self) -> list[Tensor]:
        return [self.globals_] if self.locals_ is None else [self.globals_, self.locals_]


class MultiCrop(nn.Module):
    """2 global + N local DINO views of a uint8 batch, on the batch's device.

    ``MultiCrop()`` is DINO's ViT-S/16 recipe; any :class:`AugmentConfig` field can be given as a keyword
    (``MultiCrop(global_crops_size=32, local_crops_number=4, mean=[0.5], std=[0.5])``), on top of an
    ``AugmentConfig`` or a dict of its fields.
    """

    mean: Tensor  # buffers
    std: Tensor

    def __init__(self, cfg: AugmentConfig | dict | None = None, **fields):
        super().__init__()
        if not isinstance(cfg, AugmentConfig):
            from dataclasses import fields as dc_fields

            known = {f.name for f in dc_fields(AugmentConfig)}
            given = {**(cfg or {}), **fields}
            unknown = sorted(set(given) - known)
            if unknown:
                raise TypeError(f"MultiCrop got unknown augmentation settings {unknown}; known: {sorted(known)}")
            cfg = AugmentConfig(**given)
        elif fields:
            from dataclasses import replace

            cfg = replace(cfg, **fields)
        self.cfg = cfg
        self.register_buffer("mean", torch.tensor(cfg.mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.std).view(1, -1, 1, 1), persistent=False)

    def _views(self, x: Tensor, hw: Tensor, n_views: int, size: int, scale, blur_p: list[float],
               solarize_p: list[float], g: RNG) -> Tensor:
        """All ``n_views`` views of one resolution; ``blur_p``/``solarize_p`` give one rate per view."""
        c, b = self.cfg, x.shape[0]
        n = n_views * b
        boxes = sample_crop_boxes(hw.repeat(n_views, 1), tuple(scale), g)
        v = crop_resize(x, boxes, size)
        flip = _bernoulli(c.flip_p, n, g).view(-1, 1, 1, 1)
        v = torch.where(flip, v.flip(-1), v)
        if c.jitter_p > 0:
            jitter = _bernoulli(c.jitter_p, n, g)
            ident = torch.ones(n, device=x.device)
            br = torch.where(jitter, _uniform(n, max(0.0, 1 - c.brightness), 1 + c.brightness, g), ident)
            ct = torch.where(jitter, _uniform(n, max(0.0, 1 - c.contrast), 1 + c.contrast, g), ident)
            s = torch.where(jitter, _uniform(n, max(0.0, 1 - c.saturation), 1 + c.saturation, g), ident)
            h = torch.where(jitter, _uniform(n, -c.hue, c.hue, g), ident - 1) if c.hue > 0 else None
            order = draw(g, n, 4).argsort(dim=1)
            v = color_jitter(v, br, ct, s, h, order)
        if v.shape[1] == 3 and c.grayscale_p > 0:
            gray = _bernoulli(c.grayscale_p, n, g).view(-1, 1, 1, 1)
            v = torch.where(gray, rgb_to_grayscale(v).expand_as(v), v)
        per_view = lambda p: _per_view(p, b, x.device)  # noqa: E731
        blur = _bernoulli(per_view(blur_p), n, g).view(-1, 1, 1, 1)
        sigma = _uniform(n, c.blur_sigma[0], c.blur_sigma[1], g)
        if max(blur_p) > 0:
            v = torch.where(blur, gaussian_blur(v, sigma, c.blur_sigma[1]), v)
        solar = _bernoulli(per_view(solarize_p), n, g).view(-1, 1, 1, 1)
        if max(solarize_p) > 0:  # threshold 128/255 as PIL's ImageOps.solarize
            v = torch.where(solar & (v >= 128 / 255), 1 - v, v)
        return (v - self.mean) / self.std

    @torch.no_grad()
    def forward(self, images: Tensor, hw: Tensor | None = None, g: RNG | None = None) -> Crops:
        """``images``: uint8 ``[B, C, S, S]`` (or float in [0, 1]), valid part ``hw`` (default: all of it);
        ``g`` lives on their device (default: a generator seeded from torch's global RNG).

        ``g`` is a generator, or a :class:`GlobalBatchRNG` when the batch is one rank's share.
        """
        c = self.cfg
        x = images.to(torch.float32).div_(255) if not images.is_floating_point() else images.to(torch.float32)
        if hw is None:
            hw = torch.tensor(images.shape[-2:], dtype=torch.int64).expand(len(images), 2)
        if g is None:
            g = torch.Generator(x.device).manual_seed(int(torch.randint(2**62, (1,))))
        hw = hw.to(x.device, non_blocking=True)  # once, not per resolution
        p1, p2, pl = c.blur_p
        globals_ = self._views(x, hw, 2, c.global_crops_size, c.global_crops_scale, [p1, p2],
                               [0.0, c.solarize_p], g)
        locals_ = None
        if c.local_crops_number > 0:
            n = c.local_crops_number
            locals_ = self._views(x, hw, n, c.local_crops_size, c.local_crops_scale, [pl] * n, [0.0] * n, g)
        return Crops(globals_, locals_)


class EvalTransform(nn.Module):
    """Evaluation view: centre square of ``crop_ratio`` of the shorter side, resized, normalised.

    The on-device equivalent of DINO's Resize(256) + CenterCrop(224) (crop_ratio = 224 / 256).
    """

    mean: Tensor  # buffers
    std: Tensor

    def __init__(self, size: int, crop_ratio: float, mean, std):
        super().__init__()
        self.size, self.crop_ratio = size, crop_ratio
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    @torch.no_grad()
    def forward(self, images: Tensor, hw: Tensor) -> Tensor:
        x = images.to(torch.float32).div_(255)
        hw = hw.to(x.device, torch.float32)
        side = hw.min(dim=1).values * self.crop_ratio
        y1, x1 = (hw[:, 0] - side) / 2, (hw[:, 1] - side) / 2
        boxes = torch.stack([x1, y1, x1 + side, y1 + side], dim=1)
        return (crop_resize(x, boxes, self.size) - self.mean) / self.std
