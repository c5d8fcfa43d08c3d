#!/usr/bin/env python
"""Train YOLOv4-tiny with an attention neck.

    python tools/train.py --phi 2                         # embedded shapes dataset, CPU-friendly defaults
    python tools/train.py --phi 1 --data configs/voc.yaml --img-size 416 --epochs 100
    python tools/train.py --resume runs/train/exp/weights/last.pt
    torchrun --nproc_per_node 2 tools/train.py --phi 2    # DistributedDataParallel

Every key of configs/train.yaml is a flag (--lr 1e-3, --aug.mosaic 0.5); --config FILE sets many at once.
"""
import os
import sys

from yolo_attn.engine.config import parse_train_args
from yolo_attn.engine.trainer import train


def main(argv=None) -> int:
    cfg = parse_train_args(argv)
    try:
        train(cfg)
    except (OSError, ValueError, FloatingPointError) as e:  # OSError: a file or folder that cannot be read or made
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:  # the trainer says what was kept
        if int(os.environ.get("RANK", 0)) == 0:  # under DDP the main process speaks for all
            print(f"interrupted: {e}" if str(e) else "interrupted before training started", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
