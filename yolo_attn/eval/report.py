"""Text reports of an evaluation: the per-class table and the summary lines."""
from __future__ import annotations

import math
import sys
from typing import Any, Dict, Optional, TextIO

__all__ = ["format_class_table", "format_summary", "print_report"]

# Per-class columns (precision, recall, the AP of each metric), in the order shown, with their headers.
_AP_COLUMNS = (("precision", "P"), ("recall", "R"), ("voc07_ap50", "AP50 VOC07"), ("voc12_ap50", "AP50 VOC12"),
               ("coco_ap50", "AP50 COCO"), ("coco_ap", "AP50-95 COCO"))
_MAP_KEYS = {"precision": "precision", "recall": "recall", "voc07_ap50": "voc07_map50", "voc12_ap50": "voc12_map50",
             "coco_ap50": "coco_map50", "coco_ap": "coco_map"}


def _fmt(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.3f}"


def format_class_table(result: Dict[str, Any]) -> str:
    """The per-class table of :func:`~yolo_attn.eval.evaluate`'s result: class, images (with the class),
    ground truths ("truths", non-difficult), detections, precision and recall at the confidence of the best
    mean F1, and the AP of each metric evaluated, under an "all" row with the means."""
    rows = result["classes"]
    columns = [(key, header) for key, header in _AP_COLUMNS if rows and key in rows[0]]
    width = max([len("class")] + [len(r["class"]) for r in rows])
    header = f"{'class':>{width}} {'images':>7} {'truths':>7} {'detections':>10}"
    header += "".join(f" {h:>{_width(h)}}" for _, h in columns)

    def row(name: str, images: int, truths: int, dets: int, aps) -> str:
        return f"{name:>{width}} {images:>7} {truths:>7} {dets:>10}" + "".join(
            f" {_fmt(ap):>{_width(h)}}" for ap, (_, h) in zip(aps, columns))

    lines = [header, row("all", result["images"], sum(r["ground_truths"] for r in rows),
                         sum(r["detections"] for r in rows), [result[_MAP_KEYS[k]] for k, _ in columns])]
    lines += [row(r["class"], r["images"], r["ground_truths"], r["detections"], [r[k] for k, _ in columns])
              for r in rows]
    return "\n".join(lines)


def _width(header: str) -> int:
    return 6 if len(header) == 1 else 12


def format_summary(result: Dict[str, Any]) -> str:
    """One line per metric evaluated, precision and recall at one confidence, then the time per image."""
    lines = []
    if "voc07_map50" in result:
        lines.append(f"VOC07 mAP@0.5 (11-point): {_fmt(result['voc07_map50'])}")
    if "voc12_map50" in result:
        lines.append(f"VOC12 mAP@0.5 (area):     {_fmt(result['voc12_map50'])}")
    if "coco_map" in result:
        c = {k[5:]: _fmt(v) for k, v in result.items() if k.startswith("coco_")}
        lines.append(f"COCO  mAP@[.5:.95]: {c['map']}  AP50 {c['map50']}  AP75 {c['map75']}  "
                     f"APs/m/l {c['map_small']}/{c['map_medium']}/{c['map_large']}  AR100 {c['ar100']}")
    if "f1_conf" in result:
        lines.append(f"P {_fmt(result['precision'])}  R {_fmt(result['recall'])}  F1 {_fmt(result['f1'])} at conf "
                     f"{result['f1_conf']:.3f} (the best mean F1 over classes; IoU 0.5)")
    s = result["speed"]
    lines.append(f"Speed per image: {s['preprocess']:.1f} ms pre-process, {s['inference']:.1f} ms inference, "
                 f"{s['postprocess']:.1f} ms post-process ({result['images']} images"
                 + (f", {len(result['skipped'])} skipped)" if result["skipped"] else ")"))
    return "\n".join(lines)


def print_report(result: Dict[str, Any], file: Optional[TextIO] = None) -> None:
    """Print the per-class table and the summary lines."""
    print(format_class_table(result), file=file or sys.stdout)
    print(format_summary(result), file=file or sys.stdout)
