"""Distillation: a frozen teacher trains one or several students of any timm architecture at once.

One teacher forward per step feeds every student. Two objectives:

- ``feature`` (any teacher): each student's embedding, through a linear projection to the teacher's width,
  matches the teacher's embedding of the same global crop (cosine), as lightly's distillation does;
- ``dino_head`` (a teacher with its DINO head): each student has a DINO head of the teacher's ``out_dim`` and
  learns, on every crop, the teacher head's centred (or Sinkhorn-Knopp) distribution of each global crop, as
  DINOv3 distils its family of models.

The students train directly (no EMA); the teacher never changes. Like ``dino.DINOMethod`` this reads no run
directory: ``train.Pretrainer`` runs it on the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import Config, ModelConfig, student_name
from ..distributed import DistInfo
from ..errors import UserError
from ..maths.augment import Crops
from ..maths.loss import CenteredLoss, at_least_fp32, pairwise_cross_entropy
from ..maths.models import DINOHead, build_backbone
from ..maths.optim import build_optimizer, cancel_last_layer_grads
from .base import Evaluated, Method, Schedule


def feature_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean of 1 - cos(student_i, teacher_i) over rows: 0 when every projected embedding points the teacher's way."""
    return 1 - F.cosine_similarity(at_least_fp32(student), at_least_fp32(teacher).detach(), dim=-1).mean()


def distill_cross_entropy(student_out: Tensor, p_teacher: Tensor, student_temp: float, n_global: int = 2) -> Tensor:
    """Mean over every pair (teacher global view i, student view j) of H(P_t^i, P_s^j), the same view included:
    unlike DINO's self-distillation, a student learns the teacher's answer on the very crop it saw too.

    ``student_out`` ``[V * B, K]`` (view-major), ``p_teacher`` ``[n_global * B, K]`` target probabilities.
    """
    return pairwise_cross_entropy(student_out, p_teacher, student_temp, n_global, same_view=True)


# ---- the frozen teacher -----------------------------------------------------------------------

@dataclass
class FrozenTeacher:
    """The teacher's backbone (eval mode, no gradients) and, when it has one, its DINO head and center."""

    backbone: Any  # a timm model (num_features is timm's attribute)
    head: DINOHead | None
    center: Tensor | None
    source: Path

    @property
    def dim(self) -> int:
        return int(self.backbone.num_features)

    @property
    def out_dim(self) -> int:
        """The head's output size (a teacher with a head)."""
        assert self.head is not None
        return int(self.head.last_layer.parametrizations.weight.original1.shape[0])


def head_from_state(state: dict[str, Tensor]) -> DINOHead:
    """A DINO head rebuilt from its tensors (``mlp.*``, ``last_layer.*`` under dinolite's names)."""
    linear = sorted(int(k.split(".")[1]) for k in state if k.startswith("mlp.") and k.endswith(".weight"))
    v = state["last_layer.parametrizations.weight.original1"]
    first = state[f"mlp.{linear[0]}.weight"]
    hidden = first.shape[0] if len(linear) > 1 else 1
    head = DINOHead(first.shape[1], v.shape[0], hidden, v.shape[1], len(linear))
    head.load_state_dict(state)
    return head


def load_teacher(cfg: Config) -> FrozenTeacher:
    """``distill.teacher`` as a frozen backbone (and head, for the ``dino_head`` objective)."""
    from ..statedict import inner_state, is_tensor_dict
    from ..weights import load_into, read_weights_file, resolve, strip_prefixes

    d, path = cfg.distill, Path(cfg.distill.teacher)
    if d.teacher_arch:  # a bare weights file of a named timm architecture
        if not timm.is_model(d.teacher_arch.split(".")[0]):
            raise UserError(f"distill.teacher_arch={d.teacher_arch!r} is not a timm model: pick one from "
                            f"timm.list_models()")
        raw, _ = read_weights_file(path)
        obj = inner_state(raw, ("teacher", "state_dict", "model"))
        if not isinstance(obj, dict) or not is_tensor_dict(obj):
            raise UserError(f"distill.teacher={path} holds no state dict of tensors for {d.teacher_arch}: pass its "
                            f"weights (.safetensors, or a torch file of a state_dict)")
        state = strip_prefixes(obj)
        backbone = timm.create_model(d.teacher_arch, pretrained=False, num_classes=0,
                                     in_chans=len(cfg.augment.mean))
        load_into(backbone, state, path)
    else:
        backbone = resolve(path).build()
    backbone.eval().requires_grad_(False)
    head, center = None, None
    if d.objective == "dino_head":
        from .warmstart import read_init

        try:
            init = read_init(path)
        except UserError as err:
            raise UserError(f"distill.objective=dino_head needs a teacher with its DINO head (a dinolite run or "
                            f"checkpoint, or a DINO full checkpoint); {path} has none ({err}); use "
                            f"distill.objective=feature") from None
        head = head_from_state({k[len("head."):]: v for k, v in init.teacher.items() if k.startswith("head.")})
        head.eval().requires_grad_(False)
        center = init.centers.get("loss")
    return FrozenTeacher(backbone, head, center, path)


# ---- the students -----------------------------------------------------------------------------

class Students(nn.Module):
    """Every student's backbone and adapter (projection or DINO head), one module for DDP and the optimizer."""

    def __init__(self, backbones: dict[str, nn.Module], adapters: dict[str, nn.Module]):
        super().__init__()
        self.backbones, self.adapters = nn.ModuleDict(backbones), nn.ModuleDict(adapters)

    def forward(self, crops: list[Tensor]) -> dict[str, Tensor]:
        """Each student's adapter output on ``crops`` (one tensor per resolution), view-major."""
        return {name: self.adapters[name](torch.cat([backbone(x) for x in crops]))
                for name, backbone in self.backbones.items()}


class DistillMethod(Method):
    """Distillation on one process of a run: the frozen teacher, the students, their optimizer, the targets' center."""

    def __init__(self, cfg: Config, in_chans: int, device: torch.device | str = "cpu", dist: DistInfo | None = None,
                 teacher: FrozenTeacher | None = None):
        super().__init__(cfg, device, dist)
        self.teacher = teacher or load_teacher(cfg)
        self.teacher.backbone.to(self.device)
        if self.teacher.head is not None:
            self.teacher.head.to(self.device)
        self.objective = cfg.distill.objective
        size, lc = cfg.augment.global_crops_size, cfg.loss
        torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
        backbones: dict[str, nn.Module] = {}
        adapters: dict[str, nn.Module] = {}
        self.models: dict[str, ModelConfig] = {}
        for m in cfg.distill.students:
            name = student_name(m)
            backbone: Any = build_backbone(m, in_chans, size)
            width = int(backbone.num_features)
            if self.objective == "feature":
                adapters[name] = nn.Linear(width, self.teacher.dim)
            else:
                adapters[name] = DINOHead(width, self.teacher.out_dim, m.hidden_dim, m.bottleneck_dim, m.head_layers,
                                          m.norm_last_layer)
            backbones[name], self.models[name] = backbone, m
        self.students_module = Students(backbones, adapters).to(self.device)
        self.students = self.wrap_ddp(self.students_module)
        self.optimizer = build_optimizer(self.students_module, self.device, cfg.optim.optimizer)
        self.targets: CenteredLoss | None = None
        if self.objective == "dino_head":
            self.targets = CenteredLoss(self.teacher.out_dim, lc.student_temp, lc.center_momentum, lc.centering,
                                        lc.sinkhorn_iterations).to(self.device)
            if self.teacher.center is not None:
                with torch.no_grad():
                    self.targets.center.copy_(self.teacher.center.reshape(1, -1))

    def forward_backward(self, crops: Crops, sched: Schedule) -> tuple[Tensor, dict[str, Tensor]]:
        """Every student's loss, summed and backpropagated; one teacher forward for them all."""
        self.seed_drop_path(sched.step)
        autocast = self.autocast()
        with autocast, torch.no_grad():  # the teacher sees the global crops only
            t_feats = self.teacher.backbone(crops.globals_)
            t_out = self.teacher.head(t_feats) if self.teacher.head is not None else t_feats
        terms: dict[str, Tensor] = {}
        if self.objective == "feature":  # the same global crops as the teacher
            with autocast:
                outs = self.students([crops.globals_])
            for name, out in outs.items():
                terms[f"loss_{name}"] = feature_loss(out, t_out)
        else:
            assert self.targets is not None
            p_t = self.targets.targets(t_out, sched.teacher_temp)
            with autocast:
                outs = self.students(crops.by_resolution())
            for name, out in outs.items():
                terms[f"loss_{name}"] = distill_cross_entropy(out, p_t, self.cfg.loss.student_temp)
            self.targets.update_center(t_out)  # after the targets used it, as in DINO
        loss = torch.stack(list(terms.values())).sum()
        loss.backward()
        return loss.detach(), {name: term.detach() for name, term in terms.items()}

    def optimizer_step(self, sched: Schedule) -> None:
        """Every student clipped on its own, the frozen last layers' gradients dropped, one update for all."""
        if self.cfg.optim.clip_grad > 0:
            for name in self.models:  # each student clipped on its own, as if trained alone
                params = [*self.students_module.backbones[name].parameters(),
                          *self.students_module.adapters[name].parameters()]
                nn.utils.clip_grad_norm_(params, self.cfg.optim.clip_grad)
        if self.objective == "dino_head":
            for adapter in self.students_module.adapters.values():
                assert isinstance(adapter, DINOHead)
                cancel_last_layer_grads(adapter.last_layer, sched.freeze_last_layer)
        self.optimizer.step()

    def evaluated(self) -> list[Evaluated]:
        return [Evaluated(name, self.students_module.backbones[name], m) for name, m in self.models.items()]

    def state(self) -> dict:
        out = {"students": self.students_module.state_dict(), "optimizer": self.optimizer.state_dict()}
        if self.targets is not None:
            out["targets"] = self.targets.state_dict()
        return out

    def load_state(self, state: dict) -> None:
        if "students" not in state:
            raise UserError("the checkpoint is not a distillation run's: start a new train.output_dir")
        self.students_module.load_state_dict(state["students"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.targets is not None:
            self.targets.load_state_dict(state["targets"])
