"""``dinolite export``: the backbone as timm-loadable safetensors + JSON (and optionally ONNX)."""

from __future__ import annotations

import argparse

from .args import add_target_args


def run(args: argparse.Namespace) -> int:
    """Export, all or nothing: every check (the weights fit, the folder can take them, onnx is installed, the
    ONNX graph traces and matches torch in onnxruntime) runs before the first file is written in ``--out``."""
    import tempfile
    from pathlib import Path

    from ..errors import UserError
    from ..export import ONNX_FILE, check_export_folder, default_onnx_size, export_backbone, export_onnx, require_onnx
    from ..weights import resolve

    if args.onnx_size is not None and not args.onnx:
        raise UserError("--onnx-size applies to the ONNX graph: add --onnx")
    if args.onnx_size is not None and args.onnx_size < 1:
        raise UserError(f"--onnx-size must be a positive number of pixels, not {args.onnx_size}")
    if args.onnx:
        require_onnx()
    spec = resolve(args.target, args.checkpoint_key)
    if args.hf:
        from ..layouts.hf_export import export_hf

        if args.onnx:
            raise UserError("--hf writes a transformers folder; export ONNX to another --out without --hf")
        diff = export_hf(spec.build(), int(spec.kwargs.get("in_chans", 3)), Path(args.out))
        print(f"exported the {spec.kind} {args.checkpoint_key} backbone of {spec.source} to {args.out} as a "
              f"transformers model: AutoModel.from_pretrained('{args.out}') loads it; its features are "
              f"last_hidden_state[:, 0] (timm's to {diff:.2g})")
        return 0
    if args.pos_interp != "auto":
        spec.pos_interp = args.pos_interp  # how the ONNX graph's position embeddings follow --onnx-size
    model = spec.build()  # fails with the list of missing/unexpected keys before anything is written
    check_export_folder(spec, args.out)
    if not args.onnx:
        out = export_backbone(spec, args.out)
    else:
        channels, size = int(spec.kwargs.get("in_chans", 3)), args.onnx_size or default_onnx_size(spec)
        with tempfile.TemporaryDirectory(prefix="dinolite-onnx-") as tmp:
            graph = Path(tmp) / ONNX_FILE
            diff = export_onnx(model, graph, channels, size, f"the {spec.arch} backbone")
            out = export_backbone(spec, args.out, onnx=graph)
    print(f"exported the {spec.kind} {args.checkpoint_key} backbone of {spec.source} to {out}: "
          f"timm.create_model('local-dir:{out.resolve()}', pretrained=True) loads it "
          f"(timm.data.resolve_data_config(model=...) gives its preprocessing)")
    if args.onnx:
        print(f"ONNX graph {out / ONNX_FILE}: input 'images' [batch, {channels}, {size}, {size}], output 'features'; "
              f"onnxruntime matches torch to {diff:.2g} (max abs difference)")
    return 0


def register(sub) -> None:
    p = sub.add_parser("export", help="export a backbone that timm.create_model can load",
                       description="Write DIR/model.safetensors (timm parameter names) and DIR/config.json "
                                   "(timm model name and kwargs), and with --onnx DIR/model.onnx. All or nothing: "
                                   "an existing folder with other files is refused, a failed export writes nothing.")
    add_target_args(p, data=False)
    p.add_argument("--out", required=True, help="export folder (new or empty)")
    p.add_argument("--onnx", action="store_true",
                   help="also write DIR/model.onnx (dynamic batch, fixed image size), checked against torch with "
                        "onnxruntime; needs pip install 'dinolite[onnx]'")
    p.add_argument("--hf", action="store_true",
                   help="write a Hugging Face transformers folder instead (ViT, DINOv2 or DINOv2 with registers), "
                        "checked to give timm's features; needs pip install 'dinolite[hf]'")
    p.add_argument("--onnx-size", type=int, default=None,
                   help="ONNX input size in pixels (default: the export's input size, the run's eval.image_size)")
    p.set_defaults(func=run)
