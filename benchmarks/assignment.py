"""Which target assignment learns more in the same wall time on the embedded dataset?

    python benchmarks/assignment.py --minutes 12 --phi 2

Trains once with each assigner (``multi``: YOLOv5-style, every anchor within the shape ratio at both heads
plus two neighbouring cells, scale_x_y 2; ``darknet``: the best anchor only, ignore threshold 0.7,
scale_x_y 1.05) with the same config and time budget, one after the other, and prints the final
validation mAPs. Extra ``--key value`` flags go to the training config.
"""
import argparse
import csv
import sys
from pathlib import Path

from yolo_attn.engine.config import parse_train_args
from yolo_attn.engine.trainer import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=12.0, help="wall-clock budget per run")
    args, rest = parser.parse_known_args()
    results = {}
    for assigner in ("multi", "darknet"):
        cfg = parse_train_args(rest + ["--assigner", assigner, "--time", str(args.minutes),
                                       "--name", f"assign_{assigner}"])
        run = train(cfg)
        rows = list(csv.DictReader(open(Path(run) / "results.csv")))
        results[assigner] = rows[-1]
    print(f"\n{'assigner':10s} {'epochs':>6s} {'mAP@0.5 (VOC12)':>16s} {'mAP@.5:.95':>11s}")
    for assigner, row in results.items():
        print(f"{assigner:10s} {row['epoch']:>6s} {float(row['map50']):16.3f} {float(row['map50_95']):11.3f}")


if __name__ == "__main__":
    sys.exit(main())
