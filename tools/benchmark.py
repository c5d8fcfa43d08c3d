"""Time every backend and precision side by side (and, with --train, a training step against the reference's).

    python tools/benchmark.py                                    # random YOLOv4-tiny, every backend, batch 1 and 8
    python tools/benchmark.py --weights runs/train/exp/weights/best.pt --data configs/shapes.yaml   # + mAP deltas
    python tools/benchmark.py --backends torch openvino --batch 1 --rounds 20
    python tools/benchmark.py --weights best.pt --video          # + a generated 720p video, end to end
    python tools/benchmark.py --train                            # training step: reference-style vs ours
    python tools/benchmark.py --device cuda --backends torch compile   # the PyTorch variants on a GPU

Warm-up, then interleaved rounds; medians with min-max; ms, img/s, achieved GFLOP/s and the speed-up over the
plain fp32 eager model; the table is printed and written as CSV (--csv). Run it on a quiet machine: the load
average is printed with the table. The README's "Speed" section quotes its figures.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's benchmarks/ package

from yolo_attn.inference.benchmark import BACKEND_GROUPS, check_csv_path, run_benchmark  # noqa: E402
from yolo_attn.models import check_input_size  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", help="a checkpoint (.pt); default: a randomly initialised YOLOv4-tiny")
    p.add_argument("--img-size", type=int, help="input size (a multiple of 32); default: the weights' own (the "
                   "size a checkpoint runs at, a Darknet cfg's width and height), 416 without --weights and for "
                   "--train")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="batch sizes to time")
    p.add_argument("--backends", nargs="+", default=["all"], choices=["all", *BACKEND_GROUPS],
                   help="which groups to time (the fp32 eager baseline always runs)")
    p.add_argument("--data", help="data config: int8 calibration from its train split, mAP deltas on its val split")
    p.add_argument("--rounds", type=int, default=10, help="interleaved timing rounds")
    p.add_argument("--calib-count", type=int, default=300, help="calibration images for int8")
    p.add_argument("--csv", default="benchmarks/results.csv", help="where to write the table ('' for nowhere)")
    p.add_argument("--video", action="store_true", help="also predict a generated 720p video (needs --weights)")
    p.add_argument("--train", action="store_true", help="time a training step instead (416, batch 8 by default)")
    p.add_argument("--train-batch", type=int, default=8, help="batch size of the training step")
    p.add_argument("--compile-train", action="store_true", help="with --train: also time a torch.compile'd step")
    p.add_argument("--device", default="cpu", help="cpu (the default), or cuda / cuda:N / 0 for the PyTorch "
                   "variants on a GPU (fp32, channels-last, fp16, bf16; compiled with --backends compile)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for flag, values in (("--rounds", [args.rounds]), ("--batch", args.batch), ("--calib-count", [args.calib_count]),
                         ("--train-batch", [args.train_batch])):
        if min(values) < 1:
            parser.error(f"{flag} must be at least 1")
    if args.video and not args.weights:
        parser.error("--video predicts with trained weights: give --weights")
    try:
        if args.img_size is not None:
            check_input_size(args.img_size, "--img-size")
        if args.train:
            from benchmarks.train_step import run_train_benchmark

            csv_path = args.csv.replace(".csv", "_train.csv")
            if csv_path:
                check_csv_path(csv_path)
            return run_train_benchmark(args.img_size or 416, args.train_batch, args.rounds, args.weights,
                                       compile_step=args.compile_train, csv_path=csv_path, device=args.device)
        return run_benchmark(args.weights, args.img_size, args.batch, args.backends, args.data, args.rounds,
                             args.calib_count, args.csv or None, args.video, args.device)
    except (FileNotFoundError, KeyError, ValueError) as e:  # they name the file or option and the problem
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
