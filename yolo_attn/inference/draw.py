"""Drawing with OpenCV only (no font files): boxes with readable labels, one stable colour per class,
heat-map overlays and an FPS counter. Images are BGR uint8, as OpenCV draws them."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

__all__ = ["class_color", "draw_detections", "draw_fps", "overlay_heatmap"]

# 20 well-separated colours (RGB hex), so neighbouring class indices never look alike; BGR at use.
_PALETTE = (
    "FF3838", "2C99A8", "FF9D97", "00C2FF", "FF701F", "344593", "FFB21D", "6473FF", "CFD231", "0018EC",
    "48F90A", "8438FF", "92CC17", "520085", "3DDB86", "CB38FF", "1A9334", "FF95C8", "00D4BB", "FF37C7",
)
Color = Tuple[int, int, int]


def class_color(index: int) -> Color:
    """The BGR colour of class ``index``: the same in every image, run and video."""
    h = _PALETTE[int(index) % len(_PALETTE)]
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return b, g, r


def _text_color(color: Color) -> Color:
    """Black on light label backgrounds, white on dark ones (ITU-R BT.601 luma)."""
    b, g, r = color
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 150 else (255, 255, 255)


def draw_detections(
    image: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    names: Sequence[str],
    line_width: Optional[int] = None,
    hide_labels: bool = False,
    hide_conf: bool = False,
) -> np.ndarray:
    """Draw boxes labelled "name 0.87" on a copy of ``image`` (BGR). Line width and font scale follow the
    image size unless ``line_width`` is given; a label sits above its box, or inside it when the box touches
    the top edge. ``hide_conf`` leaves the score out of the label, ``hide_labels`` draws bare boxes."""
    out = image.copy()
    h, w = out.shape[:2]
    lw = line_width or max(round((h + w) / 2 * 0.003), 2)
    font_scale = lw / 3
    thickness = max(lw - 1, 1)
    for box, score, label, name in zip(boxes, scores, labels, names):
        color = class_color(int(label))
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), color, lw, cv2.LINE_AA)
        if hide_labels:
            continue
        text = name if hide_conf else f"{name} {float(score):.2f}"
        (tw, th), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        above = y1 - th - baseline - 3 >= 0
        top = y1 - th - baseline - 3 if above else y1
        x1 = min(max(x1, 0), max(w - tw - 2, 0))  # keep the label inside the image
        cv2.rectangle(out, (x1, top), (x1 + tw + 2, top + th + baseline + 3), color, -1, cv2.LINE_AA)
        cv2.putText(out, text, (x1 + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                    _text_color(color), thickness, cv2.LINE_AA)
    return out


def overlay_heatmap(image: np.ndarray, heat: np.ndarray, alpha: float = 0.45,
                    colormap: int = cv2.COLORMAP_JET) -> np.ndarray:
    """Blend ``heat`` (H, W) in [0, 1], the image's size, over ``image`` (BGR) as a colour map."""
    if heat.shape[:2] != image.shape[:2]:
        heat = cv2.resize(heat, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    colored = cv2.applyColorMap((np.clip(heat, 0.0, 1.0) * 255).astype(np.uint8), colormap)
    return cv2.addWeighted(image, 1.0 - alpha, colored, alpha, 0.0)


def draw_fps(image: np.ndarray, fps: float) -> np.ndarray:
    """Write "FPS 23.4" in the top-left corner (in place; returns ``image``)."""
    text = f"FPS {fps:.1f}"
    scale = max(image.shape[0] / 720, 0.5)
    thickness = max(int(round(2 * scale)), 1)
    (tw, th), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    cv2.rectangle(image, (0, 0), (tw + 10, th + baseline + 10), (0, 0, 0), -1)
    cv2.putText(image, text, (5, th + 5), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return image
