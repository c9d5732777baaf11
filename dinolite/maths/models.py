"""timm backbones (ViTs, with or without registers, and CNNs), the DINO projection head, and the
student / teacher pair."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import timm
import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from ..config import ModelConfig
from ..errors import UserError

VIT_ONLY = ("patch_size", "embed_dim", "depth", "num_heads", "reg_tokens", "mlp_ratio", "init_values", "no_embed_class")


def is_vit(arch: str) -> bool:
    """True for timm's VisionTransformer family (the models with patch tokens, registers and attention maps)."""
    name = arch.split(".")[0]
    return timm.is_model(name) and timm.models.model_entrypoint(name).__module__ == "timm.models.vision_transformer"


def is_vit_backbone(module: nn.Module) -> bool:
    """True for a built timm VisionTransformer (blocks, patch tokens, attention)."""
    return isinstance(module, timm.models.vision_transformer.VisionTransformer)


def backbone_kwargs(cfg: ModelConfig, in_chans: int, img_size: int, drop_path_rate: float) -> dict:
    """The keyword arguments of ``timm.create_model`` for this config (saved with exports).

    ViTs are built for any input size (``dynamic_img_size``); CNNs pool globally, so they take any
    size as they are and only get the channels and the drop-path rate.
    """
    kw = dict(num_classes=0, in_chans=in_chans, drop_path_rate=drop_path_rate)
    given = {name: getattr(cfg, name) for name in VIT_ONLY if getattr(cfg, name) is not None}
    if not is_vit(cfg.arch):
        if given:
            raise UserError(f"model.{next(iter(given))} applies to ViTs only and {cfg.arch} is not one: "
                            f"drop {', '.join('model.' + k for k in given)} or pick a ViT")
        return kw
    return dict(kw, dynamic_img_size=True, img_size=img_size, **given)


def build_backbone(cfg: ModelConfig, in_chans: int, img_size: int, drop_path_rate: float | None = None) -> nn.Module:
    """A randomly initialised timm backbone returning one embedding per image (CLS or pooled), for any input size."""
    if not timm.is_model(cfg.arch.split(".")[0]):
        raise UserError(f"model.arch={cfg.arch!r} is not a timm model: pick one from timm.list_models() "
                        f"(a ViT such as vit_small_patch16_224, or a CNN such as resnet50)")
    rate = cfg.drop_path_rate if drop_path_rate is None else drop_path_rate
    try:
        return timm.create_model(cfg.arch, pretrained=False, **backbone_kwargs(cfg, in_chans, img_size, rate))
    except (TypeError, ValueError, AssertionError) as err:
        raise UserError(f"cannot build {cfg.arch} with this config ({err}); "
                        f"check model.embed_dim/num_heads/patch_size") from None


def vit_tokens(vit: Any, x: Tensor, mask: Tensor | None = None, mask_token: Tensor | None = None) -> Tensor:
    """Every output token ``[B, prefix + N, D]`` of a timm ViT (CLS, registers, patches, after the final
    norm), with the patch embeddings where ``mask`` ``[B, h, w]`` is true replaced by ``mask_token`` (iBOT).

    The steps of timm's ``VisionTransformer.forward_features``, called one by one so the mask goes in
    between the patch embedding and the position embedding; timm's modules and weights are used as they are.
    ``vit`` is a timm ``VisionTransformer`` (typed ``Any``: its submodules are timm's attributes).
    """
    x = vit.patch_embed(x)  # [B, h, w, D] with dynamic_img_size, else [B, N, D]
    if mask is not None:
        if mask_token is None:
            raise ValueError("vit_tokens: a mask needs a mask_token")
        x = torch.where(mask.reshape(x.shape[:-1]).unsqueeze(-1), mask_token.to(x.dtype), x)
    x = vit.norm_pre(vit.patch_drop(vit._pos_embed(x)))
    return vit.norm(vit.blocks(x))


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


@dataclass
class Views:
    """What one model pass gives the losses."""

    out: Tensor  # head outputs of every view, view-major: [V * B, K]
    feats: Tensor  # backbone embeddings (CLS or pooled) of every view: [V * B, D]
    patch_out: Tensor | None = None  # patch-head outputs of the selected global-crop patches: [M, K] (iBOT)


class DINOModel(nn.Module):
    """Backbone + head applied to a list of crop batches, one backbone pass per resolution.

    ViTs take one image size per forward, so each resolution (globals, locals) goes through the
    backbone on its own; the embeddings are concatenated so the head runs once for all views.
    For iBOT the model also owns a learnable mask token and (optionally) a separate patch head.
    """

    backbone: Any  # a timm model (embed_dim, forward_head, num_prefix_tokens are timm's attributes)

    def __init__(self, backbone: nn.Module, head: DINOHead, patch_head: DINOHead | None = None,
                 mask_token: bool = False):
        super().__init__()
        self.backbone, self.head, self.patch_head = backbone, head, patch_head
        # dinov2 starts the mask token at zero; it is a parameter of the model, not of timm's backbone,
        # so exports (the backbone alone) load in plain timm.
        self.mask_token = nn.Parameter(torch.zeros(1, self.backbone.embed_dim)) if mask_token else None

    def forward(self, crops: list[Tensor], mask: Tensor | None = None, select: Tensor | None = None,
                return_features: bool = False) -> Tensor | Views:
        """Head outputs of every view (view-major), or :class:`Views` with ``return_features`` or ``select``.

        ``mask`` ``[B0, h, w]`` (bool) replaces those patches of ``crops[0]`` (the global crops) with the
        mask token; ``select`` picks the patches of ``crops[0]`` whose patch-head outputs are returned
        (the student passes its mask as both; the teacher, unmasked, selects the same patches).
        """
        feats, patches = [], None
        for i, x in enumerate(crops):
            if i == 0 and (mask is not None or select is not None):
                tokens = vit_tokens(self.backbone, x, mask, self.mask_token)
                feats.append(self.backbone.forward_head(tokens))  # CLS (or pooled), as backbone(x) gives it
                if select is not None:
                    patches = tokens[:, self.backbone.num_prefix_tokens:][select.flatten(1)]
            else:
                feats.append(self.backbone(x))
        feats_all = torch.cat(feats)
        patch_out: Tensor | None = None
        if patches is not None and self.patch_head is None:  # shared head: one call for CLS and patches
            both = self.head(torch.cat([feats_all, patches]))
            out, patch_out = both[:len(feats_all)], both[len(feats_all):]
        else:
            out = self.head(feats_all)
            if patches is not None and self.patch_head is not None:
                patch_out = self.patch_head(patches)
        if not (return_features or select is not None):
            return out
        return Views(out, feats_all, patch_out)


def build_student_teacher(cfg: ModelConfig | None = None, in_chans: int = 3, img_size: int = 224, ibot: bool = False,
                          separate_patch_head: bool = False, **model_fields) -> tuple[DINOModel, DINOModel]:
    """Two independent models; the teacher starts as a copy of the student and never gets gradients.

    ``cfg`` or :class:`ModelConfig` fields as keywords (``build_student_teacher(arch="vit_tiny_patch16_224",
    patch_size=7, out_dim=1024, in_chans=1, img_size=28)``).

    The teacher has no drop path (it is evaluated as a whole network, as in DINO). With ``ibot`` both
    get a mask token (the teacher's is never used) and, with ``separate_patch_head``, a patch head.
    """

    if cfg is None or model_fields:
        from dataclasses import replace

        cfg = replace(cfg or ModelConfig(), **model_fields)

    def head(dim: int) -> DINOHead:
        return DINOHead(dim, cfg.out_dim, cfg.hidden_dim, cfg.bottleneck_dim, cfg.head_layers, cfg.norm_last_layer)

    def make(drop_path: float) -> DINOModel:
        backbone: Any = build_backbone(cfg, in_chans, img_size, drop_path)  # num_features is timm's attribute
        if ibot and not is_vit(cfg.arch):
            raise UserError(f"loss.ibot_weight > 0 needs a ViT (patch tokens) and {cfg.arch} is not one: "
                            f"set loss.ibot_weight=0 or pick a ViT")
        dino_head = head(backbone.num_features)
        patch_head = head(backbone.num_features) if ibot and separate_patch_head else None
        return DINOModel(backbone, dino_head, patch_head, mask_token=ibot)

    student = make(cfg.drop_path_rate)
    teacher = make(0.0)
    teacher.load_state_dict(student.state_dict())
    teacher.requires_grad_(False)
    return student, teacher


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """teacher <- m * teacher + (1 - m) * student, over all parameters with two foreach calls."""
    t_params: list[Tensor] = list(teacher.parameters())
    s_params: list[Tensor] = [p.detach() for p in student.parameters()]
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, s_params, alpha=1 - momentum)
