"""Evaluation: VOC07/VOC12 AP with the devkit's semantics, COCO AP through pycocotools, precision and recall at
one confidence, the confusion matrix, and the model evaluator."""
from .coco import coco_ground_truth, coco_results, evaluate_coco, load_coco_ground_truth
from .confusion import best_f1_point, confusion_matrix
from .evaluator import METRICS, GroundTruth, evaluate
from .plots import plot_confusion_matrix, plot_pr_curves
from .report import format_class_table, format_summary, print_report
from .voc import evaluate_detection_arrays, evaluate_detections, interpolated_precision, voc_ap

__all__ = [
    "METRICS",
    "GroundTruth",
    "best_f1_point",
    "coco_ground_truth",
    "coco_results",
    "confusion_matrix",
    "evaluate",
    "evaluate_coco",
    "evaluate_detection_arrays",
    "evaluate_detections",
    "format_class_table",
    "format_summary",
    "interpolated_precision",
    "load_coco_ground_truth",
    "plot_confusion_matrix",
    "plot_pr_curves",
    "print_report",
    "voc_ap",
]
