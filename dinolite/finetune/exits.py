"""A timm ViT classifier with extra classifiers ("exits") on the CLS token of intermediate blocks
(a timm CNN classifier works too, without exits).

The intermediate tokens come from timm's ``forward_intermediates``; the final exit is the ViT's own
head on its normalised, pooled output, so a model without intermediate exits is exactly the timm
classifier. ``forward`` always returns a list of logits, shallow to deep.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from ..errors import UserError


def default_exit_blocks(depth: int) -> list[int]:
    """Blocks at 1/4, 1/2 and 3/4 of the depth (rounded half up), those strictly inside the network."""
    return sorted({int(depth * f + 0.5) for f in (0.25, 0.5, 0.75)} & set(range(1, depth)))


def check_exit_blocks(blocks: list[int], depth: int) -> list[int]:
    """The sorted block numbers, or a UserError naming the first one outside 1..depth-1."""
    if depth == 0:
        raise UserError("layer-wise distillation puts exits on a ViT's blocks and --init is not a ViT: "
                        "pick a ViT --init, or another method")
    if depth < 2:
        raise UserError(f"the backbone has {depth} block: layer-wise distillation needs at least 2; "
                        f"pick a deeper --init")
    for b in blocks:
        if not 1 <= b <= depth - 1:
            raise UserError(f"layerwise.exits={list(blocks)}: block {b} is outside the backbone's depth "
                            f"({depth} blocks); use block numbers 1..{depth - 1} "
                            f"(the final classifier sits after block {depth})")
    if len(set(blocks)) != len(blocks):
        raise UserError(f"layerwise.exits={list(blocks)} lists a block twice: give each block once")
    return sorted(blocks)


class ExitHead(nn.Module):
    """LayerNorm + linear classifier on one block's CLS token (BYOT's shallow classifier, ViT-style)."""

    def __init__(self, dim: int, num_classes: int, std: float = 0.02):
        super().__init__()
        self.norm, self.fc = nn.LayerNorm(dim), nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.fc.weight, std=std)
        nn.init.zeros_(self.fc.bias)

    def forward(self, cls: Tensor) -> tuple[Tensor, Tensor]:
        feat = self.norm(cls)
        return self.fc(feat), feat


@dataclass
class ExitOutputs:
    logits: list[Tensor]  # one [B, C] per exit, shallow to deep; the last is the final classifier
    hints: list[Tensor]  # projected shallow features (only with hint adapters)
    final_feature: Tensor | None  # the final pooled feature the hints are pulled towards


class MultiExitViT(nn.Module):
    """``vit`` (a timm ViT with a classification head) plus exits after ``exit_blocks`` (1-based)."""

    vit: Any  # a timm model: its attributes (blocks, num_features, forward_intermediates) are timm's

    def __init__(self, vit: nn.Module, exit_blocks: list[int] | None = None, hint: bool = False, std: float = 0.02):
        super().__init__()
        self.vit = vit
        depth = len(getattr(vit, "blocks", []))
        self.exit_blocks = check_exit_blocks(list(exit_blocks or []), depth) if exit_blocks else []
        if self.exit_blocks and not hasattr(vit, "forward_intermediates"):
            raise UserError(f"{type(vit).__name__} has no forward_intermediates: "
                            f"layer-wise distillation needs a timm ViT")
        dim, classes = self.vit.num_features, self.vit.num_classes
        self.exits = nn.ModuleList(ExitHead(dim, classes, std) for _ in self.exit_blocks)
        self.hints = nn.ModuleList(nn.Linear(dim, dim) for _ in self.exit_blocks) if hint else nn.ModuleList()

    @property
    def depth(self) -> int:
        """Transformer blocks (0 for a CNN: one final classifier, no exits, no layer-wise LR decay)."""
        return len(self.vit.blocks) if hasattr(self.vit, "blocks") else 0

    @property
    def exit_depths(self) -> list[int]:
        """Blocks computed to reach each exit, shallow to deep (the final exit: all of them)."""
        return self.exit_blocks + [self.depth]

    def _cls(self, tokens: Tensor, prefix: Tensor) -> Tensor:
        return prefix[:, 0] if getattr(self.vit, "global_pool", "token") == "token" else tokens.mean(dim=1)

    def forward_all(self, x: Tensor) -> ExitOutputs:
        if not self.exit_blocks:
            return ExitOutputs([self.vit(x)], [], None)
        final, inter = self.vit.forward_intermediates(x, indices=[b - 1 for b in self.exit_blocks], norm=False,
                                                      output_fmt="NLC", return_prefix_tokens=True)
        pooled = self.vit.forward_head(final, pre_logits=True)
        logits, hints = [], []
        for i, (tokens, prefix) in enumerate(inter):
            z, feat = self.exits[i](self._cls(tokens, prefix))
            logits.append(z)
            if len(self.hints):
                hints.append(self.hints[i](feat))
        logits.append(self.vit.head(pooled))
        return ExitOutputs(logits, hints, pooled)

    def forward(self, x: Tensor, all_outputs: bool = False):
        """Exit logits (a list, shallow to deep); ``all_outputs=True`` returns the ExitOutputs (hints too)."""
        out = self.forward_all(x)
        return out if all_outputs else out.logits
