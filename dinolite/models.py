"""timm ViT backbones, the DINO projection head, and the student / teacher pair."""

from __future__ import annotations

import timm
import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from .config import ModelConfig
from .errors import UserError


def backbone_kwargs(cfg: ModelConfig, in_chans: int, img_size: int, drop_path_rate: float) -> dict:
    """The keyword arguments of ``timm.create_model`` for this config (saved with exports)."""
    kw = dict(num_classes=0, dynamic_img_size=True, img_size=img_size, in_chans=in_chans,
              drop_path_rate=drop_path_rate)
    for name in ("patch_size", "embed_dim", "depth", "num_heads"):
        value = getattr(cfg, name)
        if value is not None:
            kw[name] = value
    return kw


def build_backbone(cfg: ModelConfig, in_chans: int, img_size: int, drop_path_rate: float | None = None) -> nn.Module:
    """A randomly initialised timm ViT returning the CLS embedding, for any input size."""
    if not timm.is_model(cfg.arch.split(".")[0]):
        raise UserError(f"model.arch={cfg.arch!r} is not a timm model: pick a ViT from timm.list_models('vit_*')")
    rate = cfg.drop_path_rate if drop_path_rate is None else drop_path_rate
    try:
        return timm.create_model(cfg.arch, pretrained=False, **backbone_kwargs(cfg, in_chans, img_size, rate))
    except (TypeError, ValueError, AssertionError) as err:
        raise UserError(f"cannot build {cfg.arch} with this config ({err}); check model.embed_dim/num_heads/patch_size") from None


class DINOHead(nn.Module):
    """MLP (GELU, no BN) -> bottleneck -> L2 norm -> weight-normalised linear to ``out_dim``.

    With ``norm_last_layer`` the weight-norm gain is frozen at 1, so the last layer's rows stay
    unit-norm: the DINO paper found this stabilises training of ViT-S.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 n_layers: int = 3, norm_last_layer: bool = True):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (n_layers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for i in range(n_layers):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < n_layers - 1:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        # parametrizations.weight_norm: original0 is the gain g, original1 the direction v.
        with torch.no_grad():
            self.last_layer.parametrizations.weight.original0.fill_(1.0)
        if norm_last_layer:
            self.last_layer.parametrizations.weight.original0.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        x = nn.functional.normalize(self.mlp(x), dim=-1, p=2)
        return self.last_layer(x)


class DINOModel(nn.Module):
    """Backbone + head applied to a list of crop batches, one backbone pass per resolution.

    ViTs take one image size per forward, so each resolution (globals, locals) goes through the
    backbone on its own; the CLS embeddings are concatenated so the head runs once for all views.
    """

    def __init__(self, backbone: nn.Module, head: DINOHead):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, crops: list[Tensor], return_features: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Head outputs of every view (view-major); with ``return_features`` also the backbone's CLS features."""
        feats = torch.cat([self.backbone(x) for x in crops])
        out = self.head(feats)
        return (out, feats) if return_features else out


def build_student_teacher(cfg: ModelConfig, in_chans: int, img_size: int) -> tuple[DINOModel, DINOModel]:
    """Two independent models; the teacher starts as a copy of the student and never gets gradients.

    The teacher has no drop path (it is evaluated as a whole network, as in DINO).
    """

    def make(drop_path: float) -> DINOModel:
        backbone = build_backbone(cfg, in_chans, img_size, drop_path)
        head = DINOHead(backbone.num_features, cfg.out_dim, cfg.hidden_dim, cfg.bottleneck_dim,
                        cfg.head_layers, cfg.norm_last_layer)
        return DINOModel(backbone, head)

    student = make(cfg.drop_path_rate)
    teacher = make(0.0)
    teacher.load_state_dict(student.state_dict())
    teacher.requires_grad_(False)
    return student, teacher


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """teacher <- m * teacher + (1 - m) * student, over all parameters with two foreach calls."""
    t_params = list(teacher.parameters())
    s_params = [p.detach() for p in student.parameters()]
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, s_params, alpha=1 - momentum)
