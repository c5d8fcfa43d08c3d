"""Evaluate weights on a dataset split: VOC07 / VOC12 mAP@0.5 (devkit semantics) and COCO mAP (pycocotools).

    python tools/eval.py --weights runs/train/exp/weights/best.pt                    # embedded shapes, val
    python tools/eval.py --weights best.pt --data configs/voc.yaml --split test --metric voc07
    python tools/eval.py --weights yolov4-tiny.weights --data configs/coco.yaml --metric coco
    python tools/eval.py --weights best.pt --augment        # test-time augmentation (scales + flip)

Prints a per-class table (class, images, ground truths, detections, P and R at the best mean-F1 confidence,
AP per metric), one mAP line per metric, the P/R/F1 line and the time per image (pre-process, inference,
post-process). Writes predictions.json (COCO results with the dataset's original category ids),
pr_curve.png, confusion_matrix.png and metrics.json into runs/eval/<name> (exp, exp2, ...).
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from yolo_attn.eval.evaluator import METRICS
from yolo_attn.eval.run import run_eval
from yolo_attn.models.tta import DEFAULT_FLIPS, DEFAULT_SCALES
from yolo_attn.utils.cli import add_pipeline_flags, fraction, positive_int


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="our .pt, Darknet .weights, a port state dict (.pth), or an "
                   "export (.onnx, .torchscript, OpenVINO .xml or its folder)")
    p.add_argument("--data", help="data config YAML (default: the embedded shapes dataset)")
    p.add_argument("--root", help="the dataset folder, in place of the data config's root (or Ultralytics path)")
    p.add_argument("--split", default="val", help="split of the data config to evaluate (val, test, train)")
    p.add_argument("--metric", nargs="+", default=["all"], choices=[*METRICS, "all"],
                   help="voc07 (11-point AP@0.5), voc12 (area AP@0.5), coco (AP@[.5:.95] ...), or all")
    p.add_argument("--img-size", type=int, help="network input size, a multiple of 32 (default: the checkpoint's)")
    p.add_argument("--conf", type=fraction, default=0.001, help="minimum score kept (low, as mAP is measured)")
    p.add_argument("--iou", type=fraction, default=0.5, help="NMS IoU threshold (per class)")
    p.add_argument("--max-det", type=positive_int, default=300, help="most boxes per image")
    add_pipeline_flags(p, "detector map")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=2, help="image loading processes (0: in this process)")
    p.add_argument("--device", default="auto",
                   help="auto (the first GPU if CUDA is present, else the CPU), cpu, cuda, cuda:N or N")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32",
                   help="bf16: autocast (fast on CPUs with AMX, and on some with AVX512-BF16); fp16: autocast on "
                   "CUDA (as training validates there)")
    p.add_argument("--save-json", action=argparse.BooleanOptionalAction, default=True,
                   help="write predictions.json, the COCO-format results (default: on)")
    p.add_argument("--classes-file", "--classes", dest="classes_file",
                   help="class names, one a line, for weights without names, or Darknet's .data file, which names "
                   "its .names (default: the dataset's)")
    p.add_argument("--num-classes", type=positive_int, help="class count, for weights without names")
    p.add_argument("--phi", help="attention of Darknet .weights: 0-5 or a name such as cbam (default 0)")
    p.add_argument("--cfg", dest="darknet_cfg", metavar="CFG",
                   help="Darknet .weights: their .cfg, for custom anchors, masks, "
                   "scale_x_y and input size (default: the .cfg of their name beside them, else the official one's)")
    p.add_argument("--augment", action="store_true",
                   help="test-time augmentation: every image at several scales, some mirrored, boxes pooled before "
                        "NMS (YOLOv5's --augment; about 3.4x the network work)")
    p.add_argument("--augment-scales", type=float, nargs="+", default=list(DEFAULT_SCALES), metavar="S",
                   help="view scales for --augment (default: %(default)s)")
    p.add_argument("--augment-flips", type=int, nargs="+", default=[int(f) for f in DEFAULT_FLIPS], choices=[0, 1],
                   metavar="F", help="1 to mirror the view of the same position (default: %(default)s)")
    p.add_argument("--single-cls", action="store_true", help="every box of the data as one class, for a model "
                   "trained with --single-cls")
    p.add_argument("--project", default="runs/eval", help="parent folder of the results")
    p.add_argument("--name", default="exp", help="results folder name (made unique: exp, exp2, ...)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        run_eval(**vars(build_parser().parse_args(argv)))
    except (OSError, KeyError, ValueError) as e:  # they name the file or option and the problem
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
