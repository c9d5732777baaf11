"""The DINO method: student and EMA teacher with their heads, every loss term and its center, the
schedules, and the one training step.

``dinolite pretrain`` (``train.Pretrainer``), the library's ``DINOTrainer`` (``loop.py``) and the
throughput benchmark all call :meth:`DINOMethod.train_step`; no other copy of the step exists. The
method reads no files and knows nothing of run directories, loaders or evaluation: a task wraps it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..config import Config
from ..distributed import DistInfo
from ..engine import streams
from ..errors import UserError
from ..maths.augment import Crops
from ..maths.loss import DINOLoss, IBOTPatchLoss, koleo_loss, teacher_stats
from ..maths.masking import sample_masks
from ..maths.models import DINOModel, build_student_teacher, ema_update
from ..maths.optim import build_optimizer, cancel_last_layer_grads
from .base import Evaluated, Method, Schedule

__all__ = ["DINOMethod", "Schedule"]


class DINOMethod(Method):
    """DINO (with dinov2's KoLeo, Sinkhorn-Knopp and iBOT options) on one process of a run.

    Owns the student (DDP-wrapped with several processes), the teacher, their heads, the DINO and iBOT
    losses with their centers, the optimizer, the multi-crop augmentation and its generator. The
    step's randomness follows ``engine/streams.py``: it depends on ``(train.seed, step, rank)`` only.
    """

    def __init__(self, cfg: Config, in_chans: int, device: torch.device | str = "cpu", dist: DistInfo | None = None,
                 models: tuple[DINOModel, DINOModel] | None = None):
        super().__init__(cfg, device, dist)
        lc = cfg.loss
        ibot = lc.ibot_weight > 0
        if models is None:
            torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
            models = build_student_teacher(cfg.model, in_chans, cfg.augment.global_crops_size, ibot,
                                           lc.ibot_separate_head)
        student, teacher = models
        if self.dist.world > 1 and self.device.type == "cuda":
            # CNN batch norms: statistics over the global batch, as DINO does for its ResNet-50 (torch's
            # SyncBatchNorm runs on GPUs only; CPU processes keep per-process statistics).
            student = nn.SyncBatchNorm.convert_sync_batchnorm(student)
            teacher = nn.SyncBatchNorm.convert_sync_batchnorm(teacher)
        self.student_module: DINOModel = student.to(self.device)
        self.teacher: DINOModel = teacher.to(self.device)
        if cfg.train.compile:  # in place, so state_dict keys (checkpoints, exports) stay unchanged
            self.student_module.backbone.compile()
            self.teacher.backbone.compile()
        self.student = self.wrap_ddp(self.student_module)  # what the step calls
        self.dino_loss = DINOLoss(cfg.model.out_dim, lc.student_temp, lc.center_momentum, lc.centering,
                                  lc.sinkhorn_iterations).to(self.device)
        self.ibot_loss = IBOTPatchLoss(cfg.model.out_dim, lc.student_temp, lc.center_momentum, lc.centering,
                                       lc.sinkhorn_iterations).to(self.device) if ibot else None
        m = cfg.model  # a backbone-only model.init: the backbone slower than the fresh heads (dinolite.reuse)
        self.optimizer = build_optimizer(self.student_module, self.device, cfg.optim.optimizer,
                                         m.init_backbone_lr or 1.0, m.init_layer_decay or 1.0)

    # ---- the step ----------------------------------------------------------------------------
    def ibot_masks(self, globals_: Tensor, step: int) -> Tensor:
        """This rank's block-wise masks of the global crops, drawn per global sample (see masking.py)."""
        patch = self.student_module.backbone.patch_embed.patch_size
        h, w = globals_.shape[-2] // patch[0], globals_.shape[-1] // patch[1]
        lc = self.cfg.loss
        seed = streams.step_seed(self.cfg.train.seed, step, streams.AUGMENT)
        low, high = lc.ibot_mask_ratio
        masks = sample_masks(seed, 2, self.dist.rank * self.batch, self.batch, h, w, (low, high),
                             lc.ibot_mask_probability)
        return masks.to(self.device, non_blocking=True)

    def forward_backward(self, crops: Crops, sched: Schedule) -> tuple[Tensor, dict[str, Tensor]]:
        """The weighted loss of one step, backpropagated into the student; returns it and the step's figures
        (device tensors, detached: no host sync): each loss term, unweighted, by name (``loss_*``), and the
        teacher's collapse statistics (:meth:`teacher_figures`)."""
        lc = self.cfg.loss
        self.seed_drop_path(sched.step)
        mask = self.ibot_masks(crops.globals_, sched.step) if self.ibot_loss is not None else None
        if sched.unfreeze and self.cfg.model.init_teacher_copy:  # the heads have learned: the teacher takes them
            with torch.no_grad():
                self.teacher.load_state_dict(self.student_module.state_dict())
        with self.autocast():
            with torch.no_grad():  # the teacher sees the global views only, unmasked
                teacher = self.teacher([crops.globals_], select=mask, return_features=True)
            # the student's global views are masked for iBOT (mask None: not)
            student = self.student(crops.by_resolution(), mask=mask, select=mask, return_features=True)
        # The loss updates the center after using it (the teacher's targets of this step are centred with
        # the center of the previous steps); the monitor's statistics need the center that was used.
        if sched.unfreeze and self.cfg.model.init_recenter:  # the old center followed the warm-up's teacher
            self.dino_loss.update_center(teacher.out, momentum=0.0)
            if self.ibot_loss is not None and teacher.patch_out is not None:
                self.ibot_loss.update_center(teacher.patch_out, momentum=0.0)
        center_used = self.dino_loss.center.clone()
        terms = {"loss_dino": self.dino_loss(student.out, teacher.out, sched.teacher_temp)}
        loss = terms["loss_dino"]
        if lc.koleo_weight:  # on each global crop's CLS features, within this rank's batch (as dinov2)
            first, second = student.feats[:len(crops.globals_)].chunk(2)
            terms["loss_koleo"] = koleo_loss(first) + koleo_loss(second)
            loss = loss + lc.koleo_weight * terms["loss_koleo"]
        if self.ibot_loss is not None:
            assert mask is not None
            terms["loss_ibot"] = self.ibot_loss(student.patch_out, teacher.patch_out, mask, sched.teacher_temp)
            loss = loss + lc.ibot_weight * terms["loss_ibot"]
        loss.backward()
        figures = {name: term.detach() for name, term in terms.items()}
        return loss.detach(), {**figures, **self.teacher_figures(teacher.out.detach(), center_used, sched.teacher_temp)}

    def optimizer_step(self, sched: Schedule) -> None:
        """Drop a frozen backbone's gradients, clip, drop the frozen last layer's gradients, then the update."""
        if sched.backbone_frozen:  # no update, no weight decay, no share of the clipping norm
            for p in self.student_module.backbone.parameters():
                p.grad = None
        if self.cfg.optim.clip_grad > 0:
            nn.utils.clip_grad_norm_(self.student_module.parameters(), self.cfg.optim.clip_grad)
        cancel_last_layer_grads(self.student_module.head.last_layer, sched.freeze_last_layer)
        self.optimizer.step()

    def update_teacher(self, momentum: float) -> None:
        """teacher <- momentum * teacher + (1 - momentum) * student."""
        ema_update(self.teacher, self.student_module, momentum)

    def after_update(self, sched: Schedule) -> None:
        self.update_teacher(sched.momentum)

    @staticmethod
    def teacher_figures(teacher_out: Tensor, center: Tensor, teacher_temp: float) -> dict[str, Tensor]:
        """This step's teacher entropy and KL of its mean output to uniform (the collapse monitor's input).

        Returned with every step's figures, so the engine averages them over the whole log interval (one
        host sync per interval, as for the loss) instead of the monitor reading the interval's last batch.
        Computed without gradient, random numbers or collectives: the training maths stay bit for bit
        the same. The teacher's own centred softmax, whatever ``loss.centering`` is (the center is kept up
        to date under Sinkhorn-Knopp too): Sinkhorn-Knopp's targets have a uniform mean by construction. Under
        Sinkhorn-Knopp the centred softmax is nearly balanced on healthy runs as well, so the monitor reads
        its entropy alone there (monitor.py).
        """
        entropy, kl = teacher_stats(teacher_out, center, teacher_temp)
        return {"teacher_entropy": entropy, "kl_uniform": kl}

    def evaluated(self) -> list[Evaluated]:
        return [Evaluated("teacher", self.teacher.backbone, self.cfg.model)]

    # ---- state -------------------------------------------------------------------------------
    def state(self) -> dict:
        """Weights, optimizer and centers (references, not copies); the same on every rank."""
        out = {"student": self.student_module.state_dict(), "teacher": self.teacher.state_dict(),
               "optimizer": self.optimizer.state_dict(), "loss": self.dino_loss.state_dict(),
               "precision": self.precision}
        if self.ibot_loss is not None:
            out["ibot_loss"] = self.ibot_loss.state_dict()
        return out

    def load_state(self, state: dict) -> None:
        if ("ibot_loss" in state) != (self.ibot_loss is not None):  # the model has a mask token or not
            was = "on (loss.ibot_weight > 0)" if "ibot_loss" in state else "off (loss.ibot_weight=0)"
            raise UserError(f"the checkpoint was trained with iBOT {was}: resume with the same setting, "
                            f"or start a new train.output_dir")
        self.student_module.load_state_dict(state["student"])
        self.teacher.load_state_dict(state["teacher"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.dino_loss.load_state_dict(state["loss"])
        self.precision = state.get("precision", self.precision)  # a resume computes as the run began
        if self.ibot_loss is not None:
            self.ibot_loss.load_state_dict(state["ibot_loss"])
