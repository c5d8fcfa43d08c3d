"""Letterbox resize (keep aspect ratio, pad), shared by training, evaluation and prediction."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple, Union

import cv2
import numpy as np

__all__ = ["PAD_VALUE", "LetterboxInfo", "as_hw", "letterbox", "letterbox_boxes", "unletterbox_boxes"]

PAD_VALUE = 128  # Darknet pads with 0.5 grey, as does the popular PyTorch port


@dataclass(frozen=True)
class LetterboxInfo:
    """How an image was letterboxed: ``new = old * scale + (pad_x, pad_y)``."""

    scale: float
    pad_x: float
    pad_y: float
    orig_shape: Tuple[int, int]  # (h, w) before resizing


def as_hw(size: Union[int, Sequence[int]]) -> Tuple[int, int]:
    """(height, width) of an image size given as one int or as (h, w)."""
    return (int(size), int(size)) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))


def letterbox(
    image: np.ndarray,
    size: Union[int, Tuple[int, int]] = 416,
    pad_value: int = PAD_VALUE,
    interpolation: int = cv2.INTER_LINEAR,
) -> Tuple[np.ndarray, LetterboxInfo]:
    """Resize ``image`` (H, W, C) to fit ``size`` (int or (h, w)) keeping its aspect ratio, centred on a
    ``pad_value`` canvas. Returns the new image and the :class:`LetterboxInfo` that maps boxes back."""
    out_h, out_w = as_hw(size)
    h, w = image.shape[:2]
    if h <= 0 or w <= 0:  # the scale below would divide by zero
        raise ValueError(f"cannot letterbox an empty image (shape {tuple(image.shape)}); give an image of at "
                         f"least 1x1 pixels")
    scale = min(out_h / h, out_w / w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    pad_x, pad_y = (out_w - new_w) // 2, (out_h - new_h) // 2
    if (new_w, new_h) != (w, h):
        image = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    if image.ndim == 2:
        image = image[:, :, None]
    canvas = np.full((out_h, out_w, image.shape[2]), pad_value, dtype=image.dtype)
    canvas[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = image
    # Effective scale per axis differs from `scale` by rounding; the mean of both is within half a pixel.
    return canvas, LetterboxInfo(scale, float(pad_x), float(pad_y), (h, w))


def letterbox_boxes(boxes: np.ndarray, info: LetterboxInfo) -> np.ndarray:
    """Map (N, 4) xyxy boxes from the original image into the letterboxed one."""
    out = np.asarray(boxes, dtype=np.float32).copy()
    out[:, [0, 2]] = out[:, [0, 2]] * info.scale + info.pad_x
    out[:, [1, 3]] = out[:, [1, 3]] * info.scale + info.pad_y
    return out


def unletterbox_boxes(boxes, info: LetterboxInfo):
    """Map (N, 4) xyxy boxes (numpy or torch) from the letterboxed image back to the original, clipped."""
    out = boxes.clone() if hasattr(boxes, "clone") else np.asarray(boxes, dtype=np.float32).copy()
    h, w = info.orig_shape
    out[:, [0, 2]] = ((out[:, [0, 2]] - info.pad_x) / info.scale).clip(0, w)
    out[:, [1, 3]] = ((out[:, [1, 3]] - info.pad_y) / info.scale).clip(0, h)
    return out
