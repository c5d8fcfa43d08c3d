"""Export a checkpoint to ONNX, OpenVINO IR or TorchScript, with class names and decode settings inside (or, for
phi 0, to Darknet's .weights + .cfg + .names), then check it against PyTorch.

    python tools/export.py --weights best.pt --format onnx                       # best.onnx, 416x416, batch 1
    python tools/export.py --weights best.pt --format onnx --dynamic             # any batch and size
    python tools/export.py --weights best.pt --format openvino --precision bf16  # best_openvino_bf16/best.xml
    python tools/export.py --weights best.pt --format openvino --precision int8 --data configs/voc.yaml
    python tools/export.py --weights best.pt --format torchscript                # best.torchscript (LibTorch, any size)
    python tools/export.py --weights best.pt --format darknet                    # best_darknet/best.{weights,cfg,names}
    python tools/export.py --weights yolov4-tiny.weights --format onnx --resize letterbox --nms iou

int8 is calibrated on training images (--data) or on a folder of images (--calib-images). The exported model
runs with `tools/predict.py --weights best.onnx` and `Detector.load("best.onnx")`, no other file needed, the
way its weights run (Darknet's: their cfg's resize and NMS) unless --resize / --nms store another.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from yolo_attn.inference.export import DEFAULT_OPSET, FORMATS, MIN_OPSET, max_opset, run_export
from yolo_attn.utils.cli import add_pipeline_flags, positive_int


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", help="our .pt, or Darknet .weights / port .pth with --classes-file")
    p.add_argument("--format", choices=FORMATS, default="onnx")
    p.add_argument("--output", help="file (.onnx / .xml / .torchscript / .weights), or a folder to write it into; "
                   "default: beside the weights")
    p.add_argument("--img-size", type=int, help="input size, a multiple of 32 (default: the checkpoint's)")
    p.add_argument("--dynamic", action="store_true", help="free batch size and input size")
    p.add_argument("--precision", choices=["fp32", "bf16", "int8"], default="fp32",
                   help="bf16: OpenVINO only (an inference hint); int8: post-training quantization (NNCF for "
                   "OpenVINO, ONNX Runtime's quantizer for ONNX)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help=f"ONNX opset, {MIN_OPSET} to {max_opset() or 'the newest the installed torch exports'}")
    p.add_argument("--data", help="data config whose training images calibrate int8")
    p.add_argument("--calib-images", help="a folder of images to calibrate int8 instead of --data")
    p.add_argument("--calib-count", type=int, default=300, help="calibration images to use")
    p.add_argument("--classes-file", help="class names, one per line, for weights without names (or Darknet's "
                   ".data file, which names its .names)")
    p.add_argument("--num-classes", type=positive_int, help="class count, for weights without names")
    p.add_argument("--cfg", help="Darknet .weights: their .cfg (default: the .cfg of their name beside them)")
    p.add_argument("--no-check", action="store_true", help="skip the parity check against PyTorch")
    add_pipeline_flags(p, "detector test", "the export")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_export(**vars(build_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
