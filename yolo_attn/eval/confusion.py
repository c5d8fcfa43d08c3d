"""Precision and recall at one confidence, and the confusion matrix, as YOLOv5 and Ultralytics report them.

mAP summarizes every confidence at once; a user choosing ``--conf`` for deployment wants precision and recall
at one. :func:`best_f1_point` picks the confidence where the mean F1 over classes is highest (Ultralytics'
``P`` and ``R`` columns); :func:`confusion_matrix` counts which class each object was detected as, with a
background row and column for misses and false alarms (YOLOv5's ``ConfusionMatrix``).

Both are written here because no library computes them on our arrays with these semantics: the counts come
from the VOC matching (:mod:`yolo_attn.eval.voc`), so difficult objects stay ignored, and the matrix follows
YOLOv5's one-to-one matching by IoU.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import numpy as np
import torch
from torchvision.ops import box_iou

__all__ = ["CONFUSION_CONF", "CONFUSION_IOU", "best_f1_point", "confusion_matrix"]

CONFUSION_CONF = 0.25  # YOLOv5's: the matrix shows detections as predict (default --conf) would report them
CONFUSION_IOU = 0.45


def best_f1_point(recall: Sequence[np.ndarray], precision: Sequence[np.ndarray], scores: Sequence[np.ndarray],
                  num_gt: Sequence[int], steps: int = 1001) -> Optional[Dict[str, Any]]:
    """Per class precision, recall and F1 at the confidence (of ``steps`` from 0 to 1: 0, 0.001, ...) that
    maximizes their mean F1 over the classes with ground truth (the highest such confidence); None when no
    class has any.

    ``recall``, ``precision`` and ``scores`` are a class's ranked arrays as
    :func:`~yolo_attn.eval.voc.evaluate_detection_arrays` returns them. At a confidence t a class keeps its
    detections scoring at least t, and its precision and recall are the curve's at the last of them: exact
    counts, not an interpolated curve. A class keeping no detection has precision 1 and recall 0 (as
    Ultralytics sets them), so F1 0. Classes without ground truth get NaN.
    """
    valid = [c for c in range(len(num_gt)) if num_gt[c] > 0]
    if not valid:
        return None
    thresholds = np.linspace(0.0, 1.0, steps)
    p = np.ones((len(valid), steps))
    r = np.zeros((len(valid), steps))
    for k, c in enumerate(valid):
        kept = np.searchsorted(-np.asarray(scores[c]), -thresholds, side="right")  # scores >= t (ranked high first)
        some = kept > 0
        p[k, some] = precision[c][kept[some] - 1]
        r[k, some] = recall[c][kept[some] - 1]
    with np.errstate(invalid="ignore"):
        f1 = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    mean = f1.mean(axis=0)
    # of equal F1s the highest confidence (it keeps fewest boxes); but with no true positive at all (F1 0
    # everywhere) confidence 0, as Ultralytics' argmax: at 1 nothing is kept and precision would read 1
    best = int(np.flatnonzero(mean == mean.max())[-1]) if mean.max() > 0 else 0

    def per_class(values: np.ndarray) -> list:
        out = [float("nan")] * len(num_gt)
        for k, c in enumerate(valid):
            out[c] = float(values[k, best])
        return out

    return {"conf": float(thresholds[best]), "precision": per_class(p), "recall": per_class(r), "f1": per_class(f1),
            "mean_precision": float(p[:, best].mean()), "mean_recall": float(r[:, best].mean()),
            "mean_f1": float(f1[:, best].mean())}


def confusion_matrix(gt_boxes: Sequence[np.ndarray], gt_labels: Sequence[np.ndarray],
                     gt_difficult: Sequence[np.ndarray], detections: Sequence[np.ndarray], num_classes: int,
                     conf: float = CONFUSION_CONF, iou: float = CONFUSION_IOU) -> np.ndarray:
    """(C + 1, C + 1) counts, rows the predicted class and columns the true one; the last row counts the
    objects no detection found, the last column the detections that found no object.

    Per image: detections scoring above ``conf`` and objects are paired one to one by IoU above ``iou``,
    highest IoU first, whatever their classes (YOLOv5's matching). A detection left unpaired that overlaps a
    difficult object by more than ``iou`` is not counted, as the VOC metrics ignore it.
    ``detections``: per image (K, 6) x1, y1, x2, y2, score, class; objects: (N, 4) boxes and (N,) labels.
    """
    matrix = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    for boxes, labels, difficult, det in zip(gt_boxes, gt_labels, gt_difficult, detections):
        det = np.asarray(det, dtype=np.float64).reshape(-1, 6)
        det = det[det[:, 4] > conf]
        difficult = np.asarray(difficult, dtype=bool)
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        easy, hard = boxes[~difficult], boxes[difficult]
        truth = np.asarray(labels, dtype=np.int64)[~difficult]
        predicted = det[:, 5].astype(np.int64)
        overlap = box_iou(torch.from_numpy(easy), torch.from_numpy(det[:, :4])).numpy()
        g, d = np.nonzero(overlap > iou)
        by_iou = np.argsort(-overlap[g, d], kind="stable")
        g, d = g[by_iou], d[by_iou]
        # one to one, best IoU first: each detection keeps its best object, then each object its best detection
        _, first = np.unique(d, return_index=True)
        g, d = g[np.sort(first)], d[np.sort(first)]
        _, first = np.unique(g, return_index=True)
        g, d = g[first], d[first]
        np.add.at(matrix, (predicted[d], truth[g]), 1)
        missed = np.ones(len(truth), bool)
        missed[g] = False
        np.add.at(matrix, (num_classes, truth[missed]), 1)
        unpaired = np.ones(len(det), bool)
        unpaired[d] = False
        if len(hard):
            on_hard = (box_iou(torch.from_numpy(hard), torch.from_numpy(det[:, :4])).numpy() > iou).any(axis=0)
            unpaired &= ~on_hard
        np.add.at(matrix, (predicted[unpaired], num_classes), 1)
    return matrix
