"""What evaluation judges of a run: a backbone, its name and the config that builds it afresh. Defined here,
below the methods, so evaluation reads what a method trains without importing the methods."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..config import ModelConfig


@dataclass
class Evaluated:
    """A backbone a run is judged by (k-NN, online k-NN, export), with the config that builds it afresh."""

    name: str  # "teacher" for DINO; the student's name for distillation
    backbone: nn.Module
    model: ModelConfig

    @property
    def suffix(self) -> str:
        """Appended to the metric keys (``knn_top1`` + suffix); DINO's teacher keeps the plain keys."""
        return "" if self.name == "teacher" else f"_{self.name}"
