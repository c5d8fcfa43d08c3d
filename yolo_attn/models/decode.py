"""Darknet's YOLO decoding of the raw head maps (src/yolo_layer.c), vectorized."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from torchvision.ops import batched_nms

__all__ = ["NMS_KINDS", "check_nms", "darknet_nms", "decode_outputs", "Decoder", "postprocess"]

# postprocess's ``nms``: torchvision's IoU NMS on each box's best class (YOLOv5, YOLOX); Darknet's greedy DIoU NMS
# (``nms_kind=greedynms``); Darknet's default IoU NMS (no ``nms_kind``). Darknet runs its two over every class
# above the threshold per box (``multi_label``), and so does the Detector.
NMS_KINDS = ("iou", "darknet", "darknet-iou")


def decode_outputs(
    outputs: Sequence[torch.Tensor],
    level_anchors: Sequence[Sequence[Tuple[float, float]]],
    strides: Sequence[int] = (32, 16),
    scale_x_y: float = 1.05,
) -> torch.Tensor:
    """Decode raw head maps into boxes.

    Args:
        outputs: one map per head, (B, A * (5 + C), H_l, W_l), in the order of ``level_anchors``.
        level_anchors: for each head, A anchors (w, h) in input pixels.
        strides: input pixels per map cell, per head.
        scale_x_y: Darknet's grid sensitivity (1.05 in yolov4-tiny.cfg; 1.0 reproduces plain YOLOv3).

    Returns:
        (B, N, 5 + C) float: x1, y1, x2, y2 in input pixels, objectness, per-class sigmoid probabilities
        (not yet multiplied by objectness). Rows are ordered per head, then (y * W_l + x) * A + a,
        as Darknet and OpenCV order them.
    """
    decoded = []
    for out, anchors, stride in zip(outputs, level_anchors, strides):
        b, _, h, w = out.shape
        na = len(anchors)
        # (B, A, 5+C, H, W) -> (B, H, W, A, 5+C)
        p = out.float().reshape(b, na, -1, h, w).permute(0, 3, 4, 1, 2)
        ys, xs = torch.meshgrid(
            torch.arange(h, device=out.device, dtype=p.dtype),
            torch.arange(w, device=out.device, dtype=p.dtype),
            indexing="ij",
        )
        grid = torch.stack([xs, ys], dim=-1)[:, :, None, :]  # (H, W, 1, 2)
        anchor_wh = torch.as_tensor(anchors, device=out.device, dtype=p.dtype)  # (A, 2)
        xy = (p[..., 0:2].sigmoid() * scale_x_y - 0.5 * (scale_x_y - 1.0) + grid) * stride
        wh = p[..., 2:4].exp() * anchor_wh
        rest = p[..., 4:].sigmoid()
        boxes = torch.cat([xy - wh / 2, xy + wh / 2, rest], dim=-1)
        decoded.append(boxes.reshape(b, h * w * na, -1))
    return torch.cat(decoded, dim=1)


class Decoder(nn.Module):
    """:func:`decode_outputs` as a module, so a model and its decoding can be exported as one graph."""

    def __init__(self, level_anchors, strides=(32, 16), scale_x_y: float = 1.05):
        super().__init__()
        self.level_anchors = [list(map(tuple, a)) for a in level_anchors]
        self.strides = tuple(strides)
        self.scale_x_y = float(scale_x_y)

    def forward(self, outputs: Sequence[torch.Tensor]) -> torch.Tensor:
        return decode_outputs(outputs, self.level_anchors, self.strides, self.scale_x_y)


def darknet_nms(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou_threshold: float,
                max_det: Optional[int] = None, beta: float = 0.6) -> torch.Tensor:
    """Darknet's ``nms_kind=greedynms`` (src/box.c ``diounms_sort`` with ``box_diou``), per class.

    Going down the scores, a kept box suppresses every lower-scored box of its class whose
    ``IoU - (d^2 / c^2) ** beta`` exceeds the threshold (d: distance between the centres, c: diagonal of the
    smallest box enclosing both). The distance term lets close objects whose boxes overlap survive, so it
    keeps more boxes than plain IoU NMS. torchvision has no DIoU NMS, hence this loop: one vectorized step
    per kept box, at most ``max_det`` per class.

    Returns:
        indices of the kept boxes, by decreasing score.
    """
    kept = [_greedy_diou(boxes, scores, torch.nonzero(labels == c).flatten(), iou_threshold, max_det, beta)
            for c in torch.unique(labels)]
    if not kept:
        return labels.new_zeros(0)
    kept = torch.cat(kept)
    kept = kept[torch.argsort(scores[kept], descending=True, stable=True)]
    return kept if max_det is None else kept[:max_det]


_BLOCK_PAIRS = 1 << 20  # DIoUs computed at once, at most (about 40 bytes each while computed)


def _greedy_diou(boxes: torch.Tensor, scores: torch.Tensor, members: torch.Tensor, iou_threshold: float,
                 max_det: Optional[int], beta: float) -> torch.Tensor:
    """Greedy DIoU NMS over one class's ``members`` (indices into ``boxes``); the kept indices.

    The next few undecided boxes (by score) are compared with every later box at once, and the greedy pass runs
    over those rows in Python, a row lookup per box. The block grows while most of its boxes are kept (sparse
    boxes: one comparison per a few hundred boxes, where one per box took 0.4 s per image over 80 classes) and
    stays small while most are suppressed (a crowd around one object: little computed for nothing)."""
    members = members[torch.argsort(scores[members], descending=True, stable=True)]
    own = boxes[members]  # this class's boxes, by decreasing score
    n = len(own)
    limit = n if max_det is None else max_det
    shape = _area_centre(own)
    removed = np.zeros(n, dtype=bool)
    keep: List[int] = []
    start, block = 0, 32
    while len(keep) < limit and start < n:
        rows = np.flatnonzero(~removed[start:])[: max(1, min(block, _BLOCK_PAIRS // (n - start)))] + start
        if not rows.size:
            break
        first = int(rows[0])
        index = torch.as_tensor(rows, device=own.device)
        over = _diou_over(own[index], own[first:], iou_threshold, beta, [v[index] for v in shape],
                          [v[first:] for v in shape]).cpu().numpy()
        kept_here = 0
        for row, i in zip(over, rows.tolist()):
            if removed[i]:  # by a box kept earlier in this block
                continue
            keep.append(i)
            kept_here += 1
            if len(keep) == limit:
                break
            removed[first:] |= row
        start, block = int(rows[-1]) + 1, min(256, max(4, 2 * kept_here))
    return members[torch.as_tensor(keep, dtype=torch.long, device=members.device)]


def _area_centre(boxes: torch.Tensor) -> List[torch.Tensor]:
    return [(boxes[:, 2:] - boxes[:, :2]).clamp_min(0).prod(dim=1), (boxes[:, :2] + boxes[:, 2:]) / 2]


def _diou_over(a: torch.Tensor, b: torch.Tensor, iou_threshold: float, beta: float,
               shape_a: Optional[List[torch.Tensor]] = None, shape_b: Optional[List[torch.Tensor]] = None
               ) -> torch.Tensor:
    """(len(a), len(b)) bool: box.c's ``box_diou`` (IoU - (d^2 / c^2) ** beta) of each pair above the threshold;
    ``shape_*``: the boxes' :func:`_area_centre`, when already at hand."""
    (area_a, centre_a), (area_b, centre_b) = shape_a or _area_centre(a), shape_b or _area_centre(b)
    a, b = a[:, None, :], b[None, :, :]
    inter = (torch.minimum(a[..., 2:], b[..., 2:]) - torch.maximum(a[..., :2], b[..., :2])).clamp_min(0).prod(dim=-1)
    union = area_a[:, None] + area_b[None, :] - inter
    iou = torch.where((inter > 0) & (union > 0), inter / union.clamp_min(1e-12), torch.zeros_like(inter))
    diagonal = ((torch.maximum(a[..., 2:], b[..., 2:]) - torch.minimum(a[..., :2], b[..., :2])) ** 2).sum(dim=-1)
    distance = ((centre_a[:, None, :] - centre_b[None, :, :]) ** 2).sum(dim=-1)
    penalty = torch.where(diagonal > 0, (distance / diagonal.clamp_min(1e-12)) ** beta, torch.zeros_like(iou))
    return (iou - penalty) > iou_threshold


def check_nms(kind: str) -> str:
    """``kind`` if it names an NMS :func:`postprocess` runs (one of :data:`NMS_KINDS`), else a ValueError."""
    if kind not in NMS_KINDS:
        raise ValueError(f"nms must be one of {', '.join(NMS_KINDS)}, got {kind!r}")
    return kind


def postprocess(
    decoded: torch.Tensor,
    conf_threshold: float = 0.25,
    iou_threshold: float = 0.45,
    max_det: int = 300,
    classes: Optional[Sequence[int]] = None,
    multi_label: bool = False,
    agnostic: bool = False,
    max_candidates: int = 30000,
    nms: str = "iou",
    nms_scales: Optional[Sequence[Tuple[float, float]]] = None,
) -> List[torch.Tensor]:
    """Score, threshold and class-aware NMS of decoded predictions.

    Args:
        decoded: (B, N, 5 + C) from :func:`decode_outputs`.
        conf_threshold: minimum score, where score = objectness * class probability.
        multi_label: keep every class above the threshold for a box (as Darknet does; best for mAP)
            rather than only its best class (best for display).
        classes: keep only these class indices.
        nms: ``"iou"`` (torchvision ``batched_nms``, as YOLOv5 / YOLOX), ``"darknet"`` (Darknet's greedy DIoU
            NMS, :func:`darknet_nms`) or ``"darknet-iou"`` (Darknet's default ``do_nms_sort``: class by class,
            a box goes when its IoU with a kept one of higher score exceeds the threshold, which is
            ``batched_nms``). With ``multi_label`` Darknet's two keep what Darknet keeps.
        nms_scales: per image, (x, y) factors for the boxes the DIoU NMS judges (the returned boxes keep their
            units). Darknet judges boxes relative to the image (``correct_yolo_boxes``), x by its width and y by
            its height: on a letterboxed image that scales the axes unevenly, which changes DIoU (not IoU).
            ``LetterboxInfo.image_relative`` gives them.
    Returns:
        per image a (K, 6) float tensor: x1, y1, x2, y2, score, class; sorted by score, K <= max_det.
    """
    check_nms(nms)
    results = []
    for i, pred in enumerate(decoded):
        pred = pred[pred[:, 4] > conf_threshold]  # obj * cls <= obj: a cheap first cut
        scores = pred[:, 5:] * pred[:, 4:5]
        if multi_label:
            idx, cls = (scores > conf_threshold).nonzero(as_tuple=True)
            boxes, score = pred[idx, :4], scores[idx, cls]
        else:
            score, cls = scores.max(dim=1) if scores.numel() else (scores.new_zeros(0), scores.new_zeros(0).long())
            keep = score > conf_threshold
            boxes, score, cls = pred[keep, :4], score[keep], cls[keep]
        if classes is not None:
            keep = torch.isin(cls, torch.as_tensor(list(classes), device=cls.device))
            boxes, score, cls = boxes[keep], score[keep], cls[keep]
        if score.numel() > max_candidates:
            top = score.topk(max_candidates).indices
            boxes, score, cls = boxes[top], score[top], cls[top]
        groups = torch.zeros_like(cls) if agnostic else cls
        if nms == "darknet":
            judged = boxes if nms_scales is None else boxes * boxes.new_tensor(nms_scales[i]).repeat(2)
            keep = darknet_nms(judged, score, groups, iou_threshold, max_det)
        else:
            keep = batched_nms(boxes, score, groups, iou_threshold)[:max_det]
        results.append(torch.cat([boxes[keep], score[keep, None], cls[keep, None].to(boxes.dtype)], dim=1))
    return results
