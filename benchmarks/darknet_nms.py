"""Darknet's greedy DIoU NMS (``models.darknet_nms``) against the same NMS one kept box at a time (the loop
``darknet_nms`` ran until 2026-12-03, copied here) and torchvision's IoU NMS, side by side on the same boxes.

Cases: sparse boxes over 80 classes (what mAP evaluation at conf 0.001 hands an untrained or weak model), boxes in
clusters of 20, and a crowd of candidates around one object. Median of ``--repeats`` runs each; the kept boxes of
the two DIoU variants are checked to be the same.

    python benchmarks/darknet_nms.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Callable, List

import numpy as np
import torch
from torchvision.ops import batched_nms

from yolo_attn.models import darknet_nms

CASES = [(4700, 80, "sparse"), (4700, 80, "clustered"), (20000, 80, "clustered"), (2000, 1, "sparse"),
         (30000, 1, "clustered"), (5000, 1, "crowd")]


def make_boxes(n: int, classes: int, kind: str, seed: int = 0):
    """(boxes xyxy, scores, labels) in a 416 px image."""
    rng = np.random.default_rng(seed)
    if kind == "crowd":
        centres = 200 + rng.normal(0, 3, (n, 2))
        sizes = rng.uniform(30, 80, (n, 2))
    else:
        if kind == "clustered":
            centres = rng.uniform(0, 416, (n // 20, 2)).repeat(20, axis=0) + rng.normal(0, 4, (n // 20 * 20, 2))
        else:
            centres = rng.uniform(0, 416, (n, 2))
        sizes = rng.uniform(8, 80, (len(centres), 2))
    boxes = torch.tensor(np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1), dtype=torch.float32)
    return boxes, torch.tensor(rng.random(len(boxes)), dtype=torch.float32), torch.tensor(
        rng.integers(0, classes, len(boxes)))


def loop_nms(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou_threshold: float, max_det: int,
             beta: float = 0.6) -> torch.Tensor:
    """The greedy loop ``darknet_nms`` ran until 2026-12-03: per class, one vectorized comparison per kept box
    with the boxes still remaining."""
    kept = []
    for c in torch.unique(labels):
        members = torch.nonzero(labels == c).flatten()
        members = members[torch.argsort(scores[members], descending=True, stable=True)]
        own = boxes[members]
        area = (own[:, 2:] - own[:, :2]).clamp_min(0).prod(dim=1)
        centres = (own[:, :2] + own[:, 2:]) / 2
        remaining, keep = torch.arange(len(members)), []
        while remaining.numel() and len(keep) < max_det:
            i, rest = remaining[0], remaining[1:]
            keep.append(i)
            a, b = own[i], own[rest]
            inter = (torch.minimum(a[2:], b[:, 2:]) - torch.maximum(a[:2], b[:, :2])).clamp_min(0).prod(dim=1)
            union = area[i] + area[rest] - inter
            iou = torch.where((inter > 0) & (union > 0), inter / union.clamp_min(1e-12), torch.zeros_like(inter))
            diagonal = ((torch.maximum(a[2:], b[:, 2:]) - torch.minimum(a[:2], b[:, :2])) ** 2).sum(dim=1)
            distance = ((centres[i] - centres[rest]) ** 2).sum(dim=1)
            penalty = torch.where(diagonal > 0, (distance / diagonal.clamp_min(1e-12)) ** beta, torch.zeros_like(iou))
            remaining = rest[(iou - penalty) <= iou_threshold]
        if keep:
            kept.append(members[torch.stack(keep)])
    if not kept:
        return labels.new_zeros(0)
    kept = torch.cat(kept)
    return kept[torch.argsort(scores[kept], descending=True, stable=True)][:max_det]


def median_ms(op: Callable[[], torch.Tensor], repeats: int) -> float:
    op()
    times: List[float] = []
    for _ in range(repeats):
        start = time.perf_counter()
        op()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    print("| boxes | classes | kind | darknet_nms ms | one box at a time ms | torchvision IoU NMS ms | kept |")
    print("|---:|---:|---|---:|---:|---:|---:|")
    for n, classes, kind in CASES:
        boxes, scores, labels = make_boxes(n, classes, kind)
        run = lambda: darknet_nms(boxes, scores, labels, 0.45, 300)  # noqa: E731
        ours, kept = median_ms(run, args.repeats), run()
        by_loop = lambda: loop_nms(boxes, scores, labels, 0.45, 300)  # noqa: E731
        loop, kept_by_loop = median_ms(by_loop, args.repeats), by_loop()
        iou = median_ms(lambda: batched_nms(boxes, scores, labels, 0.45)[:300], args.repeats)
        if not torch.equal(kept, kept_by_loop):
            print(f"kept boxes differ for {n} {kind} boxes", file=sys.stderr)
            return 1
        print(f"| {n} | {classes} | {kind} | {ours:.1f} | {loop:.1f} | {iou:.1f} | {len(kept)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
