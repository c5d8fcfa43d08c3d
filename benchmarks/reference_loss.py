"""The reference implementation's training loss, rebuilt for timing: targets assigned in Python loops.

This is how the popular PyTorch port of YOLOv4-tiny builds its targets (its ``YOLOLoss.get_target`` and
``get_ignore``): on the CPU, a loop over the images of the batch and, inside it, a loop over each image's
boxes; each box goes to the single best-IoU anchor of all six (Darknet's rule), and only if that anchor
belongs to the head being built; predictions whose best IoU with a box exceeds ``ignore_thresh`` get no
objectness loss. The loss terms are the port's: CIoU box loss weighted by (2 - w * h), and BCE on clamped
sigmoids for objectness and classes.

It exists so ``tools/benchmark.py --train`` can time the reference-style training step beside ours
(:class:`yolo_attn.engine.loss.YoloLoss`, vectorized). It is not used for training.
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple

import torch
import torch.nn as nn

__all__ = ["ReferenceYoloLoss"]


def _bce(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    pred = pred.clamp(eps, 1.0 - eps)
    return -target * torch.log(pred) - (1.0 - target) * torch.log(1.0 - pred)


def _ciou(b1: torch.Tensor, b2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """CIoU of matching (..., 4) cx, cy, w, h boxes, written out as the port does."""
    b1_min, b1_max = b1[..., :2] - b1[..., 2:4] / 2, b1[..., :2] + b1[..., 2:4] / 2
    b2_min, b2_max = b2[..., :2] - b2[..., 2:4] / 2, b2[..., :2] + b2[..., 2:4] / 2
    inter_wh = (torch.min(b1_max, b2_max) - torch.max(b1_min, b2_min)).clamp(min=0)
    inter = inter_wh[..., 0] * inter_wh[..., 1]
    union = b1[..., 2] * b1[..., 3] + b2[..., 2] * b2[..., 3] - inter
    iou = inter / union.clamp(min=eps)
    center_dist = ((b1[..., :2] - b2[..., :2]) ** 2).sum(-1)
    enclose_wh = (torch.max(b1_max, b2_max) - torch.min(b1_min, b2_min)).clamp(min=0)
    enclose_diag = (enclose_wh**2).sum(-1)
    v = (4 / math.pi**2) * (torch.atan(b1[..., 2] / b1[..., 3].clamp(min=eps))
                            - torch.atan(b2[..., 2] / b2[..., 3].clamp(min=eps))) ** 2
    alpha = v / (1.0 - iou + v).clamp(min=eps)
    return iou - center_dist / enclose_diag.clamp(min=eps) - alpha * v


def _iou_xywh(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, 4) x (M, 4) IoU of cx, cy, w, h boxes."""
    a_min, a_max = a[:, None, :2] - a[:, None, 2:] / 2, a[:, None, :2] + a[:, None, 2:] / 2
    b_min, b_max = b[None, :, :2] - b[None, :, 2:] / 2, b[None, :, :2] + b[None, :, 2:] / 2
    wh = (torch.min(a_max, b_max) - torch.max(a_min, b_min)).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (a[:, None, 2] * a[:, None, 3] + b[None, :, 2] * b[None, :, 3] - inter)


class ReferenceYoloLoss(nn.Module):
    """The port's loss on our outputs ``(p5, p4)`` and our targets ``(M, 6)`` [image, class, x1, y1, x2, y2]
    in input pixels. Returns the total loss of the batch (sum over heads of the per-head means)."""

    def __init__(self, anchors: Sequence[Tuple[float, float]], anchor_masks: Sequence[Sequence[int]],
                 num_classes: int, ignore_thresh: float = 0.5, box: float = 0.05, obj: float = 1.0,
                 cls: float = 0.5, strides: Sequence[int] = (32, 16)):
        super().__init__()
        self.anchors = [tuple(map(float, a)) for a in anchors]
        self.anchor_masks = [list(m) for m in anchor_masks]
        self.num_classes = num_classes
        self.ignore_thresh = ignore_thresh
        self.gains = (box, obj, cls)
        self.strides = tuple(strides)

    def forward(self, outputs: Sequence[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        bs = outputs[0].shape[0]
        # the port keeps one target tensor per image, normalised cx, cy, w, h, class
        per_image = []
        in_h, in_w = outputs[0].shape[2] * self.strides[0], outputs[0].shape[3] * self.strides[0]
        for b in range(bs):
            t = targets[targets[:, 0] == b].cpu()
            cxcywh = torch.stack([(t[:, 2] + t[:, 4]) / 2 / in_w, (t[:, 3] + t[:, 5]) / 2 / in_h,
                                  (t[:, 4] - t[:, 2]) / in_w, (t[:, 5] - t[:, 3]) / in_h, t[:, 1]], 1)
            per_image.append(cxcywh)
        total = outputs[0].new_zeros(())
        for level, out in enumerate(outputs):
            total = total + self._level_loss(level, out, per_image, in_h, in_w)
        return total

    def _level_loss(self, level, out, targets, in_h, in_w):
        bs, _, h, w = out.shape
        na = len(self.anchor_masks[level])
        stride = self.strides[level]
        scaled = [(aw / stride, ah / stride) for aw, ah in self.anchors]
        pred = out.view(bs, na, 5 + self.num_classes, h, w).permute(0, 1, 3, 4, 2).contiguous()
        x, y = torch.sigmoid(pred[..., 0]), torch.sigmoid(pred[..., 1])
        pw, ph = pred[..., 2], pred[..., 3]
        conf, pred_cls = torch.sigmoid(pred[..., 4]), torch.sigmoid(pred[..., 5:])

        y_true, noobj_mask, box_loss_scale = self._get_target(level, targets, scaled, h, w, bs, na)
        noobj_mask, pred_boxes = self._get_ignore(level, x, y, pw, ph, targets, scaled, h, w, noobj_mask)
        y_true, noobj_mask, box_loss_scale = y_true.to(out), noobj_mask.to(out), box_loss_scale.to(out)
        box_loss_scale = 2 - box_loss_scale
        obj_mask = y_true[..., 4] == 1
        loss = out.new_zeros(())
        n = obj_mask.sum()
        if n != 0:
            ciou = _ciou(pred_boxes, y_true[..., :4])
            loss_loc = ((1 - ciou)[obj_mask] * box_loss_scale[obj_mask]).mean()
            loss_cls = _bce(pred_cls[obj_mask], y_true[..., 5:][obj_mask]).mean()
            loss = loss + loss_loc * self.gains[0] + loss_cls * self.gains[2]
        loss_conf = _bce(conf, obj_mask.type_as(conf))[noobj_mask.bool() | obj_mask].mean()
        return loss + loss_conf * self.gains[1]

    def _get_target(self, level, targets, scaled, h, w, bs, na):
        """The port's get_target: Python loops over images, then over boxes."""
        noobj_mask = torch.ones(bs, na, h, w, requires_grad=False)
        box_loss_scale = torch.zeros(bs, na, h, w, requires_grad=False)
        y_true = torch.zeros(bs, na, h, w, 5 + self.num_classes, requires_grad=False)
        anchor_shapes = torch.cat([torch.zeros(len(scaled), 2), torch.tensor(scaled)], 1)
        mask = self.anchor_masks[level]
        for b in range(bs):
            if len(targets[b]) == 0:
                continue
            batch_target = torch.zeros_like(targets[b])
            batch_target[:, [0, 2]] = targets[b][:, [0, 2]] * w
            batch_target[:, [1, 3]] = targets[b][:, [1, 3]] * h
            batch_target[:, 4] = targets[b][:, 4]
            gt_box = torch.cat([torch.zeros(batch_target.size(0), 2), batch_target[:, 2:4]], 1)
            best_ns = torch.argmax(_iou_xywh(gt_box, anchor_shapes), dim=-1)
            for t, best_n in enumerate(best_ns):
                if best_n not in mask:
                    continue
                k = mask.index(best_n)
                i = torch.floor(batch_target[t, 0]).long().clamp(0, w - 1)
                j = torch.floor(batch_target[t, 1]).long().clamp(0, h - 1)
                c = batch_target[t, 4].long()
                noobj_mask[b, k, j, i] = 0
                y_true[b, k, j, i, 0] = batch_target[t, 0]
                y_true[b, k, j, i, 1] = batch_target[t, 1]
                y_true[b, k, j, i, 2] = batch_target[t, 2]
                y_true[b, k, j, i, 3] = batch_target[t, 3]
                y_true[b, k, j, i, 4] = 1
                y_true[b, k, j, i, c + 5] = 1
                box_loss_scale[b, k, j, i] = batch_target[t, 2] * batch_target[t, 3] / w / h
        return y_true, noobj_mask, box_loss_scale

    def _get_ignore(self, level, x, y, pw, ph, targets, scaled, h, w, noobj_mask):
        """The port's get_ignore: decoded boxes, then a loop over images for the ignore mask."""
        bs, na = x.shape[:2]
        grid_x = torch.linspace(0, w - 1, w).repeat(h, 1).repeat(bs * na, 1, 1).view(x.shape).type_as(x)
        grid_y = torch.linspace(0, h - 1, h).repeat(w, 1).t().repeat(bs * na, 1, 1).view(y.shape).type_as(x)
        chosen = [scaled[i] for i in self.anchor_masks[level]]
        anchor_w = torch.tensor([a[0] for a in chosen]).type_as(x)
        anchor_h = torch.tensor([a[1] for a in chosen]).type_as(x)
        anchor_w = anchor_w.repeat(bs, 1).repeat(1, 1, h * w).view(pw.shape)
        anchor_h = anchor_h.repeat(bs, 1).repeat(1, 1, h * w).view(ph.shape)
        pred_boxes = torch.stack([x + grid_x, y + grid_y, torch.exp(pw.clamp(max=6.0)) * anchor_w,
                                  torch.exp(ph.clamp(max=6.0)) * anchor_h], dim=-1)
        for b in range(bs):
            if len(targets[b]) > 0:
                boxes = pred_boxes[b].detach().view(-1, 4)
                batch_target = targets[b][:, :4].clone().to(boxes)
                batch_target[:, [0, 2]] *= w
                batch_target[:, [1, 3]] *= h
                best = _iou_xywh(batch_target, boxes).max(dim=0).values.view(pred_boxes[b].shape[:3])
                noobj_mask[b][best.cpu() > self.ignore_thresh] = 0
        return noobj_mask, pred_boxes
