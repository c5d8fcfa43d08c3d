"""Convert weights from the PyTorch port or from Darknet into one of our checkpoints.

    python tools/convert.py --from port --weights yolov4_tiny_weights_voc_SE.pth \
        --classes voc_classes.txt --out voc_se.pt
    python tools/convert.py --from darknet --weights yolov4-tiny.weights --classes coco.names --out coco.pt
    python tools/convert.py --from darknet --weights backup/obj_best.weights --cfg obj.cfg --classes obj.names \
        --out obj.pt
    python tools/convert.py --from darknet --weights yolov4-tiny.weights --resize letterbox --nms iou --out coco.pt

The checkpoint carries everything needed to use it (class names, phi and attention options, anchors,
decode and pre-processing settings): ``--weights voc_se.pt`` then needs no other flag. Darknet weights run as
Darknet runs them (their cfg's resize and NMS); ``--resize`` / ``--nms`` store another way.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from yolo_attn.models import check_input_size
from yolo_attn.models.attention import phi_of, resolve_attention
from yolo_attn.utils.checkpoint import (is_our_checkpoint, load_checkpoint, load_model, meta_nms, meta_resize,
                                        save_checkpoint, with_pipeline)
from yolo_attn.utils.cli import add_pipeline_flags, positive_int

SOURCE_NAMES = {"port": "a state dict of the PyTorch port", "darknet": "a Darknet .weights file"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source", choices=sorted(SOURCE_NAMES), required=True,
                        help="where the weights come from")
    parser.add_argument("--weights", type=Path, required=True, help="port .pth state dict or Darknet .weights")
    names = parser.add_mutually_exclusive_group()
    names.add_argument("--classes", type=Path, help="class names, one per line (voc_classes.txt, coco.names), or "
                       "Darknet's .data file; Darknet: by default the .names beside its .cfg or weights")
    names.add_argument("--num-classes", type=positive_int, help="class count, when no names file is at hand")
    parser.add_argument("--phi", help="Darknet: attention of the model (0-5 or a name such as cbam, default 0; "
                        "attention blocks start untrained). Port: detected from the keys; given, it must agree")
    parser.add_argument("--cfg", type=Path, help="Darknet: the .cfg of the weights, for custom anchors, masks, "
                        "scale_x_y and input size (default: the .cfg of their name beside them)")
    parser.add_argument("--img-size", type=int, help="input size the weights were trained at (default: the "
                        "Darknet .cfg's, else 416)")
    add_pipeline_flags(parser, "detector test", "the checkpoint")
    parser.add_argument("--out", type=Path, required=True, help="our checkpoint to write (.pt)")
    return parser


def check_out(out: Path, inputs: Sequence[Optional[Path]]) -> Optional[str]:
    """Why ``out`` must not be written, or None. A checkpoint is a .pt (or .pth) file; it never replaces one
    of the files being converted, nor a file that is not an earlier conversion (a run's checkpoint: its
    training state would be lost)."""
    if out.is_dir():
        return f"is a folder; give the checkpoint's file name (e.g. {out / 'model.pt'})"
    if out.suffix.lower() not in (".pt", ".pth"):
        return "our checkpoints are .pt files (or .pth); give such a name"
    if not out.exists():
        return None
    if any(p is not None and p.exists() and out.resolve() == p.resolve() for p in inputs):
        return "is one of the files being converted; give another name"
    try:
        existing = load_checkpoint(out, mmap=True)
    except ValueError:
        existing = None
    if not is_our_checkpoint(existing) or existing["meta"].get("source") not in SOURCE_NAMES:
        return "exists and is not an earlier conversion (a training run's checkpoint, or another file); give " \
               "another name, or move it away first"
    return None  # an earlier conversion: replaced (atomically)


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    problem = check_out(args.out, [args.weights, args.cfg, args.classes])
    if problem:
        parser.error(f"--out {args.out}: {problem}")
    try:
        if args.img_size is not None:
            check_input_size(args.img_size, "--img-size")
    except ValueError as e:
        parser.error(str(e))
    if args.cfg is not None and args.source != "darknet":
        parser.error("--cfg is the .cfg of Darknet weights (--from darknet)")

    if not args.weights.is_file():
        parser.error(f"{args.weights}: no such file ({SOURCE_NAMES[args.source]} to convert)")
    if args.source == "darknet" and args.weights.suffix != ".weights" and not args.weights.name.endswith(".conv.29"):
        parser.error(f"{args.weights}: Darknet weights files end in .weights (or .conv.29)")
    try:
        phi = None if args.phi is None else phi_of(resolve_attention(args.phi))
        model, meta = load_model(args.weights, args.classes, args.num_classes, phi, cfg=args.cfg)
    except (FileNotFoundError, ValueError) as e:  # they name the file and the problem: no traceback
        parser.error(str(e))
    if meta["source"] != args.source:
        parser.error(f"{args.weights}: this is not {SOURCE_NAMES[args.source]} (it reads as '{meta['source']}')")
    if args.source == "port" and phi is not None and phi != model.phi:
        parser.error(f"{args.weights}: --phi {args.phi}, but the file's keys are those of phi {model.phi}")
    if args.img_size is not None:  # square, as --img-size runs everywhere
        meta["img_size"] = args.img_size
        meta.pop("input_shape", None)
    meta = with_pipeline(meta, args.resize, args.nms)
    save_checkpoint({"meta": meta, "model": model.state_dict(), "ema": None}, args.out)
    print(f"{args.out}: phi {model.phi} ({model.attention or 'no attention'}), {model.num_classes} classes, "
          f"scale_x_y {meta['scale_x_y']}, {meta_resize(meta)}, {meta_nms(meta)} NMS, from {args.source} file "
          f"{args.weights}")


if __name__ == "__main__":
    main()
