"""Detect objects in images, folders, globs, videos, webcams and streams.

    python tools/predict.py --weights best.pt --source bus.jpg
    python tools/predict.py --weights best.pt --source data/images --save-txt --save-json
    python tools/predict.py --weights best.onnx --source video.mp4 --view
    python tools/predict.py --weights best.pt --source 0 --attention       # webcam 0, attention overlay
    python tools/predict.py --weights yolov4-tiny.weights --classes-file coco.names --source "imgs/*.jpg"

Results go to runs/predict/<name> (exp, exp2, ...; --exist-ok reuses <name>): annotated images keep their
names (a name repeated in one run gets _2, _3, ...), videos become .mp4 at the source's fps and size;
--save-txt writes labels/<stem>.txt (class score x1 y1 x2 y2, pixels), --save-crop crops/<class>/<stem>_<k>.jpg.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from yolo_attn.inference.predict import run_predict
from yolo_attn.utils.cli import add_pipeline_flags, fraction, positive_int


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", help="our .pt, Darknet .weights / port .pth (with --classes-file), .onnx, "
                   ".torchscript, or an OpenVINO .xml (or its folder)")
    p.add_argument("--source", help="image, folder, glob, .txt list of paths, video, webcam index (0; a file or "
                                    "folder of that name is taken first) or stream URL")
    p.add_argument("--conf", type=fraction, default=0.25, help="minimum score (objectness x class probability)")
    p.add_argument("--iou", type=fraction, default=0.45, help="NMS IoU threshold (per class)")
    add_pipeline_flags(p, "detector test")
    p.add_argument("--img-size", type=int, help="network input size, a multiple of 32 (default: the checkpoint's)")
    p.add_argument("--classes", nargs="+", help="report only these classes (indices or names)")
    p.add_argument("--classes-file", help="class names, one per line, for weights without names (or Darknet's "
                   ".data file, which names its .names)")
    p.add_argument("--num-classes", type=positive_int, help="class count, for weights without names")
    p.add_argument("--cfg", help="Darknet .weights: their .cfg, for custom anchors, masks, "
                   "scale_x_y and input size (default: the .cfg of their name beside them, else the official one's)")
    p.add_argument("--max-det", type=positive_int, default=300, help="most boxes per image")
    p.add_argument("--agnostic-nms", action="store_true", help="one NMS over all classes: of overlapping boxes "
                   "of different classes only the best is kept")
    p.add_argument("--device", default="auto",
                   help="auto (the first GPU if CUDA is present, else the CPU), cpu, cuda, cuda:N or N")
    p.add_argument("--backend", choices=["torch", "onnxruntime", "openvino"],
                   help="default: the file's own; for .pt chosen for this machine (a calibrated int8 OpenVINO "
                   "export beside it is used when there is one; without one, with AMX, a webcam, a stream or "
                   "300+ images or frames run the weights converted to OpenVINO bf16 in memory, where OpenVINO and "
                   "onnx are installed)")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16", "int8"],
                   help="default: the file's own; for .pt with no --backend either, the fastest for this machine "
                   "(logged), else fp32; fp16: CUDA")
    p.add_argument("--save-txt", action="store_true", help="write labels/<stem>.txt per image or frame")
    p.add_argument("--txt-format", choices=["pixels", "yolo"], default="pixels", help="pixels: class score x1 y1 "
                   "x2 y2 in pixels; yolo: class x_center y_center width height as fractions of the image (YOLO "
                   "labels, as Ultralytics' --save-txt writes them)")
    p.add_argument("--save-conf", action="store_true", help="--txt-format yolo: the score after each box")
    p.add_argument("--save-json", action="store_true", help="write predictions.json (COCO results style)")
    p.add_argument("--save-crop", action="store_true", help="write each box's pixels as crops/<class>/<stem>_<k>.jpg")
    p.add_argument("--no-save", action="store_true", help="do not write annotated images or videos")
    p.add_argument("--view", action="store_true", help="show a window (when a display exists); q quits")
    p.add_argument("--vid-stride", type=positive_int, default=1, help="videos, webcams and streams: predict every "
                   "N-th frame (the saved video has those frames at 1/N of the fps)")
    p.add_argument("--line-width", type=positive_int, help="box line width in pixels (default: from the image size)")
    p.add_argument("--hide-labels", action="store_true", help="draw boxes without labels")
    p.add_argument("--hide-conf", action="store_true", help="draw labels without scores")
    view = p.add_mutually_exclusive_group()
    view.add_argument("--heatmap", action="store_true", help="overlay the objectness map")
    view.add_argument("--attention", action="store_true", help="overlay the attention neck's spatial gates and "
                      "print its top channel weights")
    p.add_argument("--augment", action="store_true", help="test-time augmentation: each image at several scales, "
                   "one mirrored, boxes pooled before NMS (finds more; about 3.4x the network work)")
    p.add_argument("--project", default="runs/predict", help="parent folder of the results")
    p.add_argument("--name", default="exp", help="results folder name (made unique: exp, exp2, ...)")
    p.add_argument("--exist-ok", action="store_true", help="write into --project/--name even when it exists "
                   "(its files of the same names are replaced), not into a new exp2, ...")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_predict(**vars(build_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
