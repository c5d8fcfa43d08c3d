"""YOLO loss: target assignment, CIoU box loss, BCE objectness and classification.

Two assignments, both vectorized on the training device (no Python loop over boxes or images):

- ``"multi"`` (YOLOv5 style, the default): every anchor whose width and height ratios to a box lie within
  ``anchor_t`` (4.0), at both heads, in the box's cell and in the two neighbouring cells nearest to its
  centre. Each box gets up to 3 x (anchors that fit) positives, which teaches fast from scratch. It needs
  centre offsets in (-0.5, 1.5) of a cell, which Darknet's decoding gives with ``scale_x_y = 2``
  (sigmoid * 2 - 0.5): models trained this way carry ``scale_x_y: 2.0`` in their checkpoints.
- ``"darknet"`` (Darknet's yolov4-tiny): one positive per box, the best-IoU anchor of all six (only if it
  belongs to a head's mask), in the centre cell; predictions whose best IoU with any box exceeds
  ``ignore_thresh`` (0.7) get no objectness loss; ``scale_x_y = 1.05``.

Which is better on the embedded dataset with the same budget is measured in ``benchmarks/assignment.py``.

Targets: (M, 6) float = [batch index, class, x1, y1, x2, y2] in input pixels.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import box_iou

__all__ = ["ASSIGNERS", "YoloLoss", "bbox_ciou"]

ASSIGNERS = ("multi", "darknet")
DEFAULT_SCALE_X_Y = {"multi": 2.0, "darknet": 1.05}


def bbox_ciou(box1: torch.Tensor, box2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Complete IoU (Zheng et al., AAAI 2020) of matching rows of two (N, 4) cx, cy, w, h tensors."""
    (x1, y1, w1, h1), (x2, y2, w2, h2) = box1.unbind(-1), box2.unbind(-1)
    b1_x1, b1_x2, b1_y1, b1_y2 = x1 - w1 / 2, x1 + w1 / 2, y1 - h1 / 2, y1 + h1 / 2
    b2_x1, b2_x2, b2_y1, b2_y2 = x2 - w2 / 2, x2 + w2 / 2, y2 - h2 / 2, y2 + h2 / 2
    inter = (torch.min(b1_x2, b2_x2) - torch.max(b1_x1, b2_x1)).clamp(0) * (
        torch.min(b1_y2, b2_y2) - torch.max(b1_y1, b2_y1)
    ).clamp(0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    cw = torch.max(b1_x2, b2_x2) - torch.min(b1_x1, b2_x1)
    ch = torch.max(b1_y2, b2_y2) - torch.min(b1_y1, b2_y1)
    c2 = cw**2 + ch**2 + eps
    rho2 = (x2 - x1) ** 2 + (y2 - y1) ** 2
    v = (4 / math.pi**2) * (torch.atan(w2 / (h2 + eps)) - torch.atan(w1 / (h1 + eps))) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


class YoloLoss(nn.Module):
    """Loss for :class:`yolo_attn.models.YoloV4Tiny` outputs.

    Args:
        level_anchors: per head (stride 32 first), the anchors (w, h) in input pixels.
        num_classes: C.
        assigner: ``"multi"`` or ``"darknet"`` (see the module docstring).
        scale_x_y: decoding's grid sensitivity; defaults to what the assigner needs.
        box, obj, cls: loss gains (YOLOv5's, with obj and cls scaled for two heads and the input size).
        balance: objectness weight per head (stride 32, stride 16).
        label_smoothing: class targets become (1 - eps / 2, eps / 2).
        iou_ratio: objectness target of a positive = (1 - r) + r * IoU (multi assigner; YOLOv5 uses 1).
        all_anchors: every anchor of the model, those no head uses included (the darknet assigner picks a
            box's best among all of them and gives no positive when it is an unused one, as Darknet does;
            with the official masks anchor 0, 10x14, is unused); default: the heads' anchors.
    Call: ``loss(outputs, targets, img_size)`` -> (total loss scaled by batch size, dict of detached terms).
    """

    def __init__(
        self,
        level_anchors: Sequence[Sequence[Tuple[float, float]]],
        num_classes: int,
        assigner: str = "multi",
        strides: Sequence[int] = (32, 16),
        scale_x_y: float = None,
        anchor_t: float = 4.0,
        ignore_thresh: float = 0.7,
        box: float = 0.05,
        obj: float = 1.0,
        cls: float = 0.5,
        balance: Sequence[float] = (1.0, 1.0),
        label_smoothing: float = 0.0,
        iou_ratio: float = 1.0,
        all_anchors: Optional[Sequence[Tuple[float, float]]] = None,
    ):
        super().__init__()
        if assigner not in ASSIGNERS:
            raise ValueError(f"unknown assigner '{assigner}'; choose one of {ASSIGNERS}")
        self.assigner = assigner
        self.num_classes = num_classes
        self.strides = tuple(strides)
        self.scale_x_y = DEFAULT_SCALE_X_Y[assigner] if scale_x_y is None else float(scale_x_y)
        if assigner == "multi" and self.scale_x_y < 2.0:
            raise ValueError("the 'multi' assigner uses neighbouring cells and needs scale_x_y >= 2.0")
        self.anchor_t = anchor_t
        self.ignore_thresh = ignore_thresh
        self.gains = {"box": box, "obj": obj, "cls": cls}
        self.balance = tuple(balance)
        self.cls_pos, self.cls_neg = 1.0 - label_smoothing / 2, label_smoothing / 2
        self.iou_ratio = iou_ratio
        self.register_buffer("anchors", torch.tensor(level_anchors, dtype=torch.float32), persistent=False)
        if all_anchors is None:
            all_anchors = [a for level in level_anchors for a in level]
        unique = sorted({tuple(float(v) for v in a) for a in all_anchors})
        self.register_buffer("all_anchors", torch.tensor(unique, dtype=torch.float32), persistent=False)

    def forward(
        self, outputs: Sequence[torch.Tensor], targets: torch.Tensor, img_size: Tuple[int, int] = None
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        device = outputs[0].device
        targets = targets.to(device=device, dtype=torch.float32)
        batch = outputs[0].shape[0]
        na = self.anchors.shape[1]
        preds = [
            o.float().reshape(batch, na, -1, o.shape[2], o.shape[3]).permute(0, 1, 3, 4, 2) for o in outputs
        ]  # (B, A, H, W, 5 + C) per head
        t_xywh = torch.cat([(targets[:, 2:4] + targets[:, 4:6]) / 2, targets[:, 4:6] - targets[:, 2:4]], dim=1)

        if self.assigner == "multi":
            assignments = self._assign_multi(preds, targets, t_xywh)
        else:
            assignments = self._assign_darknet(preds, targets, t_xywh)

        zero = torch.zeros((), device=device)
        lbox, lobj, lcls = zero.clone(), zero.clone(), zero.clone()
        for level, (p, (b, a, gj, gi, tbox, tcls, ignore)) in enumerate(zip(preds, assignments)):
            stride = self.strides[level]
            tobj = torch.zeros(p.shape[:4], device=device)
            if b.numel():
                ps = p[b, a, gj, gi]
                s = self.scale_x_y
                pxy = ps[:, :2].sigmoid() * s - 0.5 * (s - 1)
                # exp() as Darknet decodes; clamped here so a wild early prediction cannot overflow the loss
                pwh = ps[:, 2:4].clamp(max=6.0).exp() * self.anchors[level][a] / stride
                ciou = bbox_ciou(torch.cat([pxy, pwh], 1), tbox)
                lbox = lbox + (1.0 - ciou).mean()
                score = ciou.detach().clamp(0).to(tobj.dtype)
                if self.assigner == "darknet":
                    score = torch.ones_like(score)
                else:
                    score = (1.0 - self.iou_ratio) + self.iou_ratio * score
                # Several boxes may claim one anchor cell: the best-fitting one sets the target. A max-reduce,
                # not an indexed write in score order: which of several writes to one element lands is
                # undefined on CUDA and in CPU kernels split across threads.
                cell = ((b * tobj.shape[1] + a) * tobj.shape[2] + gj) * tobj.shape[3] + gi
                tobj.view(-1).scatter_reduce_(0, cell, score, "amax", include_self=False)
                if self.num_classes > 1:
                    t = torch.full_like(ps[:, 5:], self.cls_neg)
                    t[torch.arange(len(tcls), device=device), tcls] = self.cls_pos
                    lcls = lcls + F.binary_cross_entropy_with_logits(ps[:, 5:], t)
            obj_loss = F.binary_cross_entropy_with_logits(p[..., 4], tobj, reduction="none")
            if ignore is not None:
                keep = ~ignore | (tobj > 0)
                obj_loss = obj_loss * keep
            lobj = lobj + obj_loss.mean() * self.balance[level]

        lbox = lbox * self.gains["box"]
        lobj = lobj * self.gains["obj"]
        lcls = lcls * self.gains["cls"]
        total = (lbox + lobj + lcls) * batch
        return total, {"box": lbox.detach(), "obj": lobj.detach(), "cls": lcls.detach()}

    def _assign_multi(self, preds, targets, t_xywh):
        """YOLOv5-style: anchors within the shape-ratio bound at every head, centre cell plus 2 neighbours."""
        device = targets.device
        m = targets.shape[0]
        # neighbour offsets: centre, left, up, right, down (in cells)
        offsets = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], device=device, dtype=torch.float32) * 0.5
        out = []
        for level, p in enumerate(preds):
            h, w = p.shape[2:4]
            stride = self.strides[level]
            anchors = self.anchors[level]  # (A, 2) pixels
            if m == 0:
                out.append(self._empty(device))
                continue
            ratio = t_xywh[None, :, 2:4] / anchors[:, None]  # (A, M, 2)
            fit = torch.max(ratio, 1 / ratio).amax(dim=2) < self.anchor_t  # (A, M)
            a_idx, t_idx = fit.nonzero(as_tuple=True)
            gxy = t_xywh[t_idx, :2] / stride  # centre in cells
            gxy_inv = torch.tensor([w, h], device=device) - gxy
            j, k = ((gxy % 1 < 0.5) & (gxy > 1)).T
            l, mm = ((gxy_inv % 1 < 0.5) & (gxy_inv > 1)).T
            use = torch.stack([torch.ones_like(j), j, k, l, mm])  # (5, P)
            sel = use.nonzero(as_tuple=True)  # (offset index, candidate index)
            a_sel, t_sel = a_idx[sel[1]], t_idx[sel[1]]
            gxy_sel = gxy[sel[1]]
            gij = (gxy_sel - offsets[sel[0]]).long()
            gi = gij[:, 0].clamp(0, w - 1)
            gj = gij[:, 1].clamp(0, h - 1)
            tbox = torch.cat([gxy_sel - torch.stack([gi, gj], 1), t_xywh[t_sel, 2:4] / stride], 1)
            b = targets[t_sel, 0].long()
            out.append((b, a_sel, gj, gi, tbox, targets[t_sel, 1].long(), None))
        return out

    def _assign_darknet(self, preds, targets, t_xywh):
        """Darknet: the best of all anchors by shape IoU, centre cell only, plus the ignore mask."""
        device = targets.device
        m = targets.shape[0]
        out = []
        if m:
            wh = t_xywh[:, 2:4]
            inter = torch.min(wh[:, None], self.all_anchors[None]).prod(2)
            shape_iou = inter / (wh.prod(1)[:, None] + self.all_anchors.prod(1)[None] - inter)
            best = self.all_anchors[shape_iou.argmax(1)]  # (M, 2)
        for level, p in enumerate(preds):
            h, w = p.shape[2:4]
            stride = self.strides[level]
            anchors = self.anchors[level]
            ignore = self._ignore_mask(p, targets, level) if m else None
            if m == 0:
                out.append(self._empty(device, ignore))
                continue
            match = (best[None] == anchors[:, None]).all(2)  # (A, M)
            a_sel, t_sel = match.nonzero(as_tuple=True)
            gxy = t_xywh[t_sel, :2] / stride
            gi = gxy[:, 0].long().clamp(0, w - 1)
            gj = gxy[:, 1].long().clamp(0, h - 1)
            tbox = torch.cat([gxy - torch.stack([gi, gj], 1), t_xywh[t_sel, 2:4] / stride], 1)
            out.append((targets[t_sel, 0].long(), a_sel, gj, gi, tbox, targets[t_sel, 1].long(), ignore))
        return out

    @torch.no_grad()
    def _ignore_mask(self, p: torch.Tensor, targets: torch.Tensor, level: int) -> torch.Tensor:
        """(B, A, H, W) True where a prediction's best IoU with a box of its image exceeds ignore_thresh."""
        b, na, h, w = p.shape[:4]
        stride = self.strides[level]
        s = self.scale_x_y
        ys, xs = torch.meshgrid(torch.arange(h, device=p.device), torch.arange(w, device=p.device), indexing="ij")
        grid = torch.stack([xs, ys], -1).float()
        xy = (p[..., :2].sigmoid() * s - 0.5 * (s - 1) + grid) * stride
        wh = p[..., 2:4].clamp(max=6.0).exp() * self.anchors[level][None, :, None, None]
        boxes = torch.cat([xy - wh / 2, xy + wh / 2], -1).reshape(b, -1, 4)
        ignore = torch.zeros(b, na * h * w, dtype=torch.bool, device=p.device)
        for i in range(b):  # one IoU matrix per image: B small matmuls, no per-box loop
            gt = targets[targets[:, 0] == i, 2:6]
            if len(gt):
                ignore[i] = box_iou(boxes[i], gt).amax(1) > self.ignore_thresh
        return ignore.reshape(b, na, h, w)

    @staticmethod
    def _empty(device, ignore=None):
        e = torch.zeros(0, dtype=torch.long, device=device)
        return e, e, e, e, torch.zeros(0, 4, device=device), e, ignore
