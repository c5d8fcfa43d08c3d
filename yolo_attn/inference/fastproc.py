"""Lean pre- and post-processing for prediction: the same results as letterbox + decode_outputs + postprocess,
with less work per image.

- Pre-processing letterboxes the image as it comes (BGR frames from OpenCV are not flipped at full size, only
  the small letterboxed canvas is) and hands the backend uint8 NHWC: torch turns it into a channels-last
  float batch with one conversion, OpenVINO does the conversion inside its graph.
- Post-processing thresholds objectness on the raw logits (sigmoid is monotonic: obj > conf exactly when
  logit > log(conf / (1 - conf))) and decodes only the cells that pass, instead of decoding every cell of
  every head; grids are never built. Classes, scores, NMS and their order are those of
  :func:`yolo_attn.models.decode.postprocess`.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from torchvision.ops import batched_nms

from ..data.letterbox import LetterboxInfo, fit_to_input, letterbox_into

__all__ = ["decode_nms", "letterbox_batch"]


def letterbox_batch(
    images: Sequence[np.ndarray],
    size: Tuple[int, int],
    pad_value: int,
    interpolation: int,
    bgr: Union[bool, Sequence[bool]] = False,
    resize: str = "letterbox",
) -> Tuple[np.ndarray, List[LetterboxInfo]]:
    """Letterbox (H, W, 3) uint8 images into one (B, h, w, 3) uint8 RGB array (``resize="stretch"``:
    stretch them to it, as Darknet does; see :func:`~yolo_attn.data.letterbox.stretch`).

    ``bgr``: the images are BGR (one flag, or one per image); they are letterboxed as they are and only the
    small canvas is converted (flipping a 720p frame first costs more than the whole letterbox).
    """
    flags = [bgr] * len(images) if isinstance(bgr, bool) else list(bgr)
    out = np.empty((len(images), size[0], size[1], 3), dtype=np.uint8)
    infos = []
    for i, (image, flip) in enumerate(zip(images, flags)):
        if resize == "letterbox":  # straight into the batch, flipped in place
            infos.append(letterbox_into(out[i], image, pad_value, interpolation, bgr_to_rgb=flip))
            continue
        boxed, info = fit_to_input(image, size, resize, pad_value, interpolation)
        if flip:
            cv2.cvtColor(boxed, cv2.COLOR_BGR2RGB, dst=out[i])
        else:
            out[i] = boxed
        infos.append(info)
    return out, infos


def _logit(p: float) -> float:
    if p <= 0.0:
        return -math.inf
    if p >= 1.0:
        return math.inf
    return math.log(p / (1.0 - p))


def decode_nms(
    maps: Sequence[torch.Tensor],
    level_anchors: Sequence[Sequence[Tuple[float, float]]],
    strides: Sequence[int],
    scale_x_y: float,
    conf_threshold: float = 0.25,
    iou_threshold: float = 0.45,
    max_det: int = 300,
    classes: Optional[Sequence[int]] = None,
    max_candidates: int = 30000,
    agnostic: bool = False,
) -> List[torch.Tensor]:
    """Raw head maps -> per image (K, 6) [x1, y1, x2, y2, score, class] in input pixels, as
    ``postprocess(decode_outputs(maps, ...), ...)`` gives them (best class per box, class-aware NMS, or one
    NMS over all classes with ``agnostic``)."""
    batch = maps[0].shape[0]
    # a hair below the threshold, so rounding in the logit never drops a box the exact test keeps
    cut = _logit(conf_threshold) - 1e-4
    per_level = []
    for out, anchors, stride in zip(maps, level_anchors, strides):
        b, _, h, w = out.shape
        na = len(anchors)
        p = out.reshape(b, na, -1, h, w)
        # (B, H, W, A) order: nonzero() then yields rows in decode_outputs' order, so ties in NMS break alike
        bi, yi, xi, ai = (p[:, :, 4].permute(0, 2, 3, 1) > cut).nonzero(as_tuple=True)
        rows = p[bi, ai, :, yi, xi].float()  # (K, 5 + C)
        s = scale_x_y
        grid = torch.stack([xi, yi], 1).to(rows.dtype)
        xy = (rows[:, 0:2].sigmoid() * s - 0.5 * (s - 1.0) + grid) * stride
        wh = rows[:, 2:4].exp() * torch.as_tensor(anchors, dtype=rows.dtype, device=rows.device)[ai]
        per_level.append((bi, torch.cat([xy - wh / 2, xy + wh / 2, rows[:, 4:].sigmoid()], 1)))
    image_index = torch.cat([bi for bi, _ in per_level])
    decoded = torch.cat([d for _, d in per_level])
    results = []
    for i in range(batch):
        pred = decoded[image_index == i] if batch > 1 else decoded
        results.append(_select(pred, conf_threshold, iou_threshold, max_det, classes, max_candidates, agnostic))
    return results


def _select(pred: torch.Tensor, conf: float, iou: float, max_det: int, classes, max_candidates: int,
            agnostic: bool) -> torch.Tensor:
    """postprocess() for one image's decoded rows (best class per box)."""
    pred = pred[pred[:, 4] > conf]
    if not len(pred):
        return pred.new_zeros((0, 6))
    score, cls = (pred[:, 5:] * pred[:, 4:5]).max(dim=1)
    keep = score > conf
    boxes, score, cls = pred[keep, :4], score[keep], cls[keep]
    if classes is not None:
        keep = torch.isin(cls, torch.as_tensor(list(classes), device=cls.device))
        boxes, score, cls = boxes[keep], score[keep], cls[keep]
    if score.numel() > max_candidates:
        top = score.topk(max_candidates).indices
        boxes, score, cls = boxes[top], score[top], cls[top]
    keep = batched_nms(boxes, score, torch.zeros_like(cls) if agnostic else cls, iou)[:max_det]
    return torch.cat([boxes[keep], score[keep, None], cls[keep, None].to(boxes.dtype)], dim=1)
