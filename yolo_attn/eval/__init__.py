"""Evaluation: VOC07/VOC12 AP with the devkit's semantics, COCO AP through pycocotools, and the model evaluator."""
from .coco import coco_ground_truth, coco_results, evaluate_coco, load_coco_ground_truth
from .evaluator import METRICS, GroundTruth, evaluate
from .plots import plot_pr_curves
from .report import format_class_table, format_summary, print_report
from .voc import evaluate_detection_arrays, evaluate_detections, interpolated_precision, voc_ap

__all__ = [
    "METRICS",
    "GroundTruth",
    "coco_ground_truth",
    "coco_results",
    "evaluate",
    "evaluate_coco",
    "evaluate_detection_arrays",
    "evaluate_detections",
    "format_class_table",
    "format_summary",
    "interpolated_precision",
    "load_coco_ground_truth",
    "plot_pr_curves",
    "print_report",
    "voc_ap",
]
