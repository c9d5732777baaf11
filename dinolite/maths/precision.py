"""The step's arithmetic: float32, or bfloat16 autocast (CUDA always; a CPU only where it is faster).

bf16 autocast on a CPU is a win only where the CPU multiplies bf16 natively (AVX512-BF16) and a loss
elsewhere, and whether it pays also depends on the model's matrix sizes; so ``train.precision=fastest``
times a few real steps both ways on this machine and keeps the faster, and the choice is saved in the
checkpoints so a resume computes exactly as the run began.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager

import torch

SETTINGS = ("auto", "fastest", "fp32", "bf16")
MARGIN = 0.03  # bf16 is kept only when at least 3 % faster: a tie keeps float32's exactness


def cpu_bf16_native() -> bool:
    """Whether oneDNN runs bf16 matrix products natively on this CPU (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve(setting: str, device: torch.device, convolutional: bool = False) -> str | None:
    """``"bf16"`` or ``"fp32"`` for ``train.precision`` on ``device``; None when a timing must decide
    (``fastest`` on a CPU with native bf16). ``auto``: bf16 on CUDA, float32 on a CPU.

    ``convolutional`` (a CNN is trained): ``fastest`` keeps float32 on a CPU. oneDNN's bf16 convolution backward
    returned NaN weight gradients on this project's AVX512-BF16 CPU (a ResNet-10t's last stage, 1 x 1 inputs, at
    its 5th DINO step with the LR near zero, float32 finite), and the few timing steps need not meet it."""
    if setting in ("fp32", "bf16"):
        return setting
    if device.type == "cuda":
        return "bf16"
    if setting == "fastest" and cpu_bf16_native() and not convolutional:
        return None
    return "fp32"


def faster(seconds: dict[str, float]) -> str:
    """The precision to keep from per-step times ``{"fp32": s, "bf16": s}``."""
    return "bf16" if seconds["bf16"] < (1 - MARGIN) * seconds["fp32"] else "fp32"


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """The step's autocast context: bf16 on ``device`` when ``precision`` is ``"bf16"``."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def choose_by_timing(method, setting: str, device: torch.device, time_steps) -> dict[str, float] | None:
    """``fastest`` on a CPU with native bf16: ``time_steps()`` with ``method.precision`` set to each, the faster
    kept in ``method.precision``; returns the seconds per step of each (None: ``setting`` decides alone)."""
    if resolve(setting, device, method.convolutional) is not None:
        return None
    seconds = {}
    for name in ("fp32", "bf16"):
        method.precision = name
        seconds[name] = time_steps()
    method.precision = faster(seconds)
    return seconds


def chosen_line(seconds: dict[str, float], chosen: str) -> str:
    """The banner's line on the timing's choice (an infinite time: that precision's steps were not finite)."""
    said = {k: f"{v:.2f}" if math.isfinite(v) else "a non-finite loss or gradient" for k, v in seconds.items()}
    return (f"precision {chosen} (train.precision=fastest: {said['fp32']} s/step in float32, "
            f"{said['bf16']} in bf16 autocast on this CPU)")
