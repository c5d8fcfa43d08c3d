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
    """Raw head maps (float32, on the CPU, as every backend returns them) -> per image (K, 6) [x1, y1, x2, y2,
    score, class] in input pixels, as ``postprocess(decode_outputs(maps, ...), ...)`` gives them (best class per
    box, class-aware NMS, or one NMS over all classes with ``agnostic``).

    In NumPy up to the NMS (torchvision's): a few dozen operations on a few hundred numbers each, where torch's
    per-operation dispatch cost more than the arithmetic (decoding a 416 frame's maps right after an OpenVINO
    forward, 0.42-0.44 ms against 0.58 in torch). NumPy's exp differs from torch's in the last bit or so: the
    same boxes, in the same order, equal to float32 rounding."""
    batch = maps[0].shape[0]
    # a hair below the threshold, so rounding in the logit never drops a box the exact test keeps
    cut = _logit(conf_threshold) - 1e-4
    with np.errstate(over="ignore"):  # exp of a large logit: inf, then a sigmoid of 0 or 1, as in torch
        levels = [_decode_level(out, anchors, stride, cut, scale_x_y)
                  for out, anchors, stride in zip(maps, level_anchors, strides)]
    image_index = np.concatenate([bi for bi, _ in levels])
    decoded = np.concatenate([rows for _, rows in levels])
    return [_select(decoded[image_index == i] if batch > 1 else decoded, conf_threshold, iou_threshold, max_det,
                    classes, max_candidates, agnostic) for i in range(batch)]


def _decode_level(out: torch.Tensor, anchors: Sequence[Tuple[float, float]], stride: int, cut: float,
                  scale_x_y: float) -> Tuple[np.ndarray, np.ndarray]:
    """One head's cells whose objectness logit passes ``cut``: their image indices, and their decoded rows
    [x1, y1, x2, y2, objectness, class probabilities...]."""
    b, _, h, w = out.shape
    p = out.detach().cpu().float().numpy().reshape(b, len(anchors), -1, h, w)
    # (B, H, W, A) order: nonzero() then yields rows in decode_outputs' order, so ties in NMS break alike
    bi, yi, xi, ai = np.nonzero(p[:, :, 4].transpose(0, 2, 3, 1) > cut)
    raw = p[bi, ai, :, yi, xi]  # (K, 5 + C)
    grid = np.stack([xi, yi], 1).astype(np.float32)
    # the constants rounded to float32 once, from Python's floats, as torch rounds a scalar operand
    shift = np.float32(0.5 * (scale_x_y - 1.0))
    xy = (_sigmoid(raw[:, 0:2]) * np.float32(scale_x_y) - shift + grid) * np.float32(stride)
    wh = np.exp(raw[:, 2:4]) * np.asarray(anchors, np.float32)[ai]
    return bi, np.concatenate([xy - wh / 2, xy + wh / 2, _sigmoid(raw[:, 4:])], 1)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.float32(1) / (np.float32(1) + np.exp(-x))


def _select(pred: np.ndarray, conf: float, iou: float, max_det: int, classes, max_candidates: int,
            agnostic: bool) -> torch.Tensor:
    """postprocess() for one image's decoded rows (best class per box)."""
    pred = pred[pred[:, 4] > conf]
    if not len(pred):
        return torch.zeros((0, 6))
    scores = pred[:, 5:] * pred[:, 4:5]
    cls = scores.argmax(1)
    score = scores[np.arange(len(scores)), cls]
    keep = score > conf
    if classes is not None:
        keep &= np.isin(cls, list(classes))
    boxes, score, cls = pred[keep, :4], score[keep], cls[keep]
    if len(score) > max_candidates:  # torch's topk, as postprocess() picks them (ties alike)
        top = torch.from_numpy(score).topk(max_candidates).indices.numpy()
        boxes, score, cls = boxes[top], score[top], cls[top]
    kept = batched_nms(torch.from_numpy(boxes), torch.from_numpy(score),
                       torch.zeros(len(cls), dtype=torch.int64) if agnostic else torch.from_numpy(cls), iou)[:max_det]
    kept = kept.numpy()
    return torch.from_numpy(np.concatenate([boxes[kept], score[kept, None], cls[kept, None].astype(np.float32)], 1))
