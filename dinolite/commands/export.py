"""``dinolite export``: the backbone as timm-loadable safetensors + JSON (and optionally ONNX)."""

from __future__ import annotations

import argparse

from .args import add_target_args


def run(args: argparse.Namespace) -> int:
    from ..errors import UserError
    from ..export import export_backbone, export_onnx
    from ..weights import resolve

    spec = resolve(args.target, args.checkpoint_key)
    spec.build()  # fails with the list of missing/unexpected keys before anything is written
    out = export_backbone(spec, args.out)
    print(f"exported the {spec.kind} {args.checkpoint_key} backbone of {spec.source} to {out}: "
          f"timm.create_model('local-dir:{out.resolve()}', pretrained=True) loads it "
          f"(timm.data.resolve_data_config(model=...) gives its preprocessing)")
    if args.onnx:
        path = out / "model.onnx"
        if path.exists():
            raise UserError(f"{path} already exists: pass a new --out folder")
        size = args.onnx_size or spec.kwargs.get("img_size", 224)
        export_onnx(spec.build(), path, spec.kwargs.get("in_chans", 3), size)
        print(f"ONNX graph (input images [batch, {spec.kwargs.get('in_chans', 3)}, {size}, {size}]) written to {path}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("export", help="export a backbone that timm.create_model can load",
                       description="Write DIR/model.safetensors (timm parameter names) and DIR/config.json "
                                   "(timm model name and kwargs). An existing folder with other files is refused.")
    add_target_args(p, data=False)
    p.add_argument("--out", required=True, help="export folder (new or empty)")
    p.add_argument("--onnx", action="store_true", help="also write DIR/model.onnx (needs onnx)")
    p.add_argument("--onnx-size", type=int, default=None, help="ONNX input size (default: the training size)")
    p.set_defaults(func=run)
