"""PASCAL VOC detection AP with the devkit's semantics, vectorized with numpy.

The reference is the VOC devkit (``VOCevaldet.m``) and its Python port ``voc_eval.py`` (py-faster-rcnn),
which every VOC number in the literature comes from:

- per class, detections are ranked by score (ties keep their input order: a stable sort);
- a detection's best-overlapping ground truth is searched among ALL ground truths of its class in its
  image (difficult and already-matched ones included), with IoU on pixel-inclusive boxes
  (``w = x2 - x1 + 1``); boxes are therefore expected in the devkit's 1-based pixel coordinates;
- IoU strictly above the threshold: if that ground truth is difficult the detection is ignored (neither
  true nor false positive); if it is not yet matched the detection is a true positive and takes it;
  otherwise (a duplicate) it is a false positive. IoU at or below the threshold is a false positive;
- recall counts only non-difficult ground truths; AP is the 11-point interpolated AP (VOC2007 test,
  ``use_07_metric=True``) or the area under the monotone precision envelope (VOC2010 and later);
- mAP is the mean over the classes that have (non-difficult) ground truth; the others get AP NaN.

The greedy matching looks sequential but is not: a detection's best ground truth does not depend on
the others, so a detection is a true positive exactly when it is the highest-ranked one above the
threshold on a non-difficult ground truth. That makes every step an array operation (about 0.5 s for
the VOC2007 test size of 5,000 images x 100 detections).
"""
from __future__ import annotations

from typing import Any, Dict, Hashable, List, Mapping, Sequence, Tuple

import numpy as np

__all__ = ["evaluate_detections", "evaluate_detection_arrays", "interpolated_precision", "voc_ap"]

# The devkit's 11 recall thresholds, built exactly as voc_eval.py builds them (np.arange float steps),
# so that `recall >= t` compares against the very same floats.
_RECALL_POINTS_07 = np.arange(0.0, 1.1, 0.1)


def interpolated_precision(recall: np.ndarray, precision: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The devkit's interpolated precision at each recall in ``points``: the maximum precision at recall
    >= that point (0 where recall never reaches it). ``recall``/``precision`` are in rank order."""
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    if recall.size == 0:
        return np.zeros(len(points))
    # Recall is non-decreasing in rank order, so "max precision where recall >= t" is a suffix maximum.
    suffix_max = np.maximum.accumulate(precision[::-1])[::-1]
    first = np.searchsorted(recall, points, side="left")
    return np.where(first < recall.size, suffix_max[np.minimum(first, recall.size - 1)], 0.0)


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool = True) -> float:
    """AP from a class's cumulative recall and precision (ranked order), as the VOC devkit computes it.

    ``use_07_metric``: mean of the maximum precision at recall >= 0, 0.1, ..., 1 (VOC2007 test);
    otherwise the area under the precision envelope made monotone (VOC2010 and later).
    """
    if use_07_metric:
        return float(np.sum(interpolated_precision(recall, precision, _RECALL_POINTS_07) / 11.0))
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def _iou_pixel_inclusive(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise IoU of (N, 4) box pairs, the devkit's way: +1 on widths and heights."""
    iw = np.maximum(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]) + 1.0, 0.0)
    ih = np.maximum(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]) + 1.0, 0.0)
    inter = iw * ih
    union = ((a[:, 2] - a[:, 0] + 1.0) * (a[:, 3] - a[:, 1] + 1.0)
             + (b[:, 2] - b[:, 0] + 1.0) * (b[:, 3] - b[:, 1] + 1.0) - inter)
    with np.errstate(invalid="ignore", divide="ignore"):  # degenerate boxes: NaN / inf, handled by the caller
        return inter / union


def _best_ground_truth(
    det_group: np.ndarray, det_boxes: np.ndarray, gt_group: np.ndarray, gt_boxes: np.ndarray
) -> Tuple[np.ndarray, np.ndarray]:
    """For each detection, the best IoU with a ground truth of the same (image, class) group and that
    ground truth's index (the first one on ties, as ``np.argmax``); -inf and -1 where the group has none."""
    num_det = det_group.size
    best_iou = np.full(num_det, -np.inf)
    best_gt = np.full(num_det, -1, dtype=np.int64)
    if num_det == 0 or gt_group.size == 0:
        return best_iou, best_gt
    gt_order = np.argsort(gt_group, kind="stable")  # keeps each group's ground truths in input order
    sorted_groups = gt_group[gt_order]
    start = np.searchsorted(sorted_groups, det_group, side="left")
    count = np.searchsorted(sorted_groups, det_group, side="right") - start
    has_gt = np.flatnonzero(count)
    if has_gt.size == 0:
        return best_iou, best_gt
    count = count[has_gt]
    # One row per (detection, candidate ground truth) pair, grouped by detection.
    pair_det = np.repeat(has_gt, count)
    seg_start = np.concatenate(([0], np.cumsum(count)[:-1]))
    pair_gt = gt_order[np.repeat(start[has_gt] - seg_start, count) + np.arange(pair_det.size)]
    iou = _iou_pixel_inclusive(det_boxes[pair_det], gt_boxes[pair_gt])
    seg_max = np.maximum.reduceat(iou, seg_start)
    # A NaN IoU (a NaN or degenerate box) makes its segment's max NaN, as np.max does in the devkit, where the
    # detection then fails the threshold; argmax's first-NaN is the match it would report.
    rep = np.repeat(seg_max, count)
    is_max = (iou == rep) | (np.isnan(iou) & np.isnan(rep))
    first_max = np.minimum.reduceat(np.where(is_max, np.arange(iou.size), iou.size), seg_start)
    best_iou[has_gt] = seg_max
    best_gt[has_gt] = pair_gt[first_max]
    return best_iou, best_gt


def evaluate_detection_arrays(
    det_image: np.ndarray,
    det_class: np.ndarray,
    det_score: np.ndarray,
    det_boxes: np.ndarray,
    gt_image: np.ndarray,
    gt_class: np.ndarray,
    gt_boxes: np.ndarray,
    gt_difficult: np.ndarray,
    num_classes: int,
    iou_threshold: float = 0.5,
    use_07_metric: bool = True,
) -> Dict[str, Any]:
    """:func:`evaluate_detections` on flat arrays: integer image indices, classes, scores and (N, 4)
    xyxy boxes in devkit (1-based, pixel-inclusive) coordinates. Same result dict."""
    det_image = np.asarray(det_image, dtype=np.int64).reshape(-1)
    det_class = np.asarray(det_class, dtype=np.int64).reshape(-1)
    det_score = np.asarray(det_score, dtype=np.float64).reshape(-1)
    det_boxes = np.asarray(det_boxes, dtype=np.float64).reshape(-1, 4)
    gt_image = np.asarray(gt_image, dtype=np.int64).reshape(-1)
    gt_class = np.asarray(gt_class, dtype=np.int64).reshape(-1)
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    gt_difficult = np.asarray(gt_difficult, dtype=bool).reshape(-1)
    for what, cls, image in (("detection", det_class, det_image), ("ground truth", gt_class, gt_image)):
        bad = (cls < 0) | (cls >= num_classes)
        if bad.any():
            raise ValueError(f"{what} class {int(cls[bad][0])} is outside 0..{num_classes - 1} "
                             f"(num_classes={num_classes})")
        if (image < 0).any():  # the (class, image) grouping key below would alias it with another class's image
            raise ValueError(f"{what} image index {int(image[image < 0][0])} is negative (indices are 0-based "
                             f"positions)")
    if not (det_image.size == det_class.size == det_score.size == len(det_boxes)):
        raise ValueError("detection arrays differ in length")
    if not (gt_image.size == gt_class.size == gt_difficult.size == len(gt_boxes)):
        raise ValueError("ground-truth arrays differ in length")

    num_images = int(max(det_image.max(initial=-1), gt_image.max(initial=-1))) + 1
    best_iou, best_gt = _best_ground_truth(
        det_class * num_images + det_image, det_boxes, gt_class * num_images + gt_image, gt_boxes
    )
    # Rank by class, then score descending; ties keep input order (lexsort is stable).
    order = np.lexsort((-det_score, det_class))
    ranked_gt = best_gt[order]
    claims = best_iou[order] > iou_threshold
    on_difficult = np.zeros(order.size, dtype=bool)
    on_difficult[claims] = gt_difficult[ranked_gt[claims]]
    on_gt = claims & ~on_difficult
    # The first (highest-ranked) claim on a ground truth takes it; later claims are duplicates.
    claimed = np.flatnonzero(on_gt)
    _, first = np.unique(ranked_gt[claimed], return_index=True)
    tp = np.zeros(order.size, dtype=bool)
    tp[claimed[first]] = True
    fp = ~tp & ~on_difficult

    ranked_class = det_class[order]
    class_start = np.searchsorted(ranked_class, np.arange(num_classes + 1))
    num_gt = np.bincount(gt_class[~gt_difficult], minlength=num_classes)
    ap: List[float] = []
    recalls: List[np.ndarray] = []
    precisions: List[np.ndarray] = []
    ranked_score = det_score[order]
    for c in range(num_classes):
        sl = slice(class_start[c], class_start[c + 1])
        # Ignored (difficult) detections stay in the curve as repeated points, exactly as in the devkit.
        tp_cum = np.cumsum(tp[sl], dtype=np.float64)
        fp_cum = np.cumsum(fp[sl], dtype=np.float64)
        precision = tp_cum / np.maximum(tp_cum + fp_cum, np.finfo(np.float64).eps)
        recall = tp_cum / num_gt[c] if num_gt[c] else np.zeros_like(tp_cum)
        recalls.append(recall)
        precisions.append(precision)
        ap.append(voc_ap(recall, precision, use_07_metric) if num_gt[c] else float("nan"))
    with_gt = num_gt > 0
    return {
        "map": float(np.mean(np.asarray(ap)[with_gt])) if with_gt.any() else float("nan"),
        "ap": ap,
        "num_gt": num_gt.tolist(),
        "num_det": np.diff(class_start).tolist(),
        "recall": recalls,
        "precision": precisions,
        "scores": [ranked_score[class_start[c]:class_start[c + 1]] for c in range(num_classes)],
        "iou_threshold": float(iou_threshold),
        "use_07_metric": bool(use_07_metric),
    }


def _split_detection_rows(detections: Sequence[Sequence[Any]]) -> Tuple[List[Hashable], np.ndarray]:
    """(image_id, class, score, x1, y1, x2, y2) rows -> image ids and an (N, 6) float array."""
    if len(detections) == 0:
        return [], np.zeros((0, 6))
    # One object array is the fastest way from many tuples to columns; ids that are themselves
    # sequences (tuples) would add a dimension, so those take the slower zip path.
    rows = np.array(detections, dtype=object)
    if rows.shape == (len(detections), 7):
        return rows[:, 0].tolist(), rows[:, 1:].astype(np.float64)
    image_ids, *numbers = zip(*detections)
    return list(image_ids), np.array(numbers, dtype=np.float64).T


def evaluate_detections(
    detections: Sequence[Tuple[Hashable, int, float, float, float, float, float]],
    ground_truths: Mapping[Hashable, Sequence[Tuple[int, float, float, float, float, bool]]],
    num_classes: int,
    iou_threshold: float = 0.5,
    use_07_metric: bool = True,
) -> Dict[str, Any]:
    """VOC AP per class and mAP, with the devkit's semantics (see the module docstring).

    Args:
        detections: ``(image_id, class, score, x1, y1, x2, y2)`` rows; an image id absent from
            ``ground_truths`` is an image without objects (its detections are false positives).
        ground_truths: ``image_id -> [(class, x1, y1, x2, y2, difficult), ...]``.
        num_classes: classes are 0 .. num_classes - 1.
        Boxes are in the devkit's coordinates: 1-based, pixel-inclusive (x2 is the last pixel column).

    Returns:
        dict with ``map`` (mean over classes with ground truth; NaN when none has any), ``ap`` (per class,
        NaN for a class without ground truth), ``num_gt`` (non-difficult ground truths per class),
        ``num_det``, and per class the ranked ``recall`` and ``precision`` arrays (the PR curve) and the
        ``scores`` they are ranked by.
    """
    image_index: Dict[Hashable, int] = {}
    gt_rows = []
    for image_id, rows in ground_truths.items():
        image_index[image_id] = len(image_index)
        gt_rows.extend((image_index[image_id], *row) for row in rows)
    gt = np.asarray(gt_rows, dtype=np.float64).reshape(-1, 7)
    image_ids, det = _split_detection_rows(detections)
    # An id absent from the ground truth gets a new index: an image without objects.
    det_image = [image_index.setdefault(image_id, len(image_index)) for image_id in image_ids]
    return evaluate_detection_arrays(
        det_image, det[:, 0], det[:, 1], det[:, 2:6],
        gt[:, 0], gt[:, 1], gt[:, 2:6], gt[:, 6] != 0,
        num_classes, iou_threshold, use_07_metric,
    )
