"""What the network looks at, as maps over the original image: the objectness heat map (from the raw head
maps, any backend) and the attention neck's spatial gates (CBAM's spatial map, CoordAtt's H x W gates,
GC's context weights), plus the strongest channel weights of SE / ECA / CBAM / GC.

Get the inputs with ``Detector.predict(images, keep_maps=True, keep_gates=True)``.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import cv2
import numpy as np

from .detector import Detections

__all__ = ["attention_maps", "channel_weights", "format_channel_weights", "mean_attention_map", "objectness_map"]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def to_image(grid: np.ndarray, det: Detections) -> np.ndarray:
    """A map over the network input (any resolution) -> the original image: stretch to the letterboxed (or
    stretched) input, cut the padding off, resize to the image."""
    in_h, in_w = det.input_shape
    info = det.letterbox
    full = cv2.resize(grid.astype(np.float32), (in_w, in_h), interpolation=cv2.INTER_LINEAR)
    h, w = det.image_shape
    x0, y0 = int(round(info.pad_x)), int(round(info.pad_y))
    sx, sy = info.scales
    x1, y1 = x0 + max(1, int(round(w * sx))), y0 + max(1, int(round(h * sy)))
    return cv2.resize(full[y0:y1, x0:x1], (w, h), interpolation=cv2.INTER_LINEAR)


def objectness_map(det: Detections, num_anchors: int) -> np.ndarray:
    """(H, W) in [0, 1] over the original image: the highest objectness of any anchor at either scale."""
    if det.maps is None:
        raise ValueError("no raw maps kept; call Detector.predict(..., keep_maps=True)")
    heat = None
    for raw in det.maps:
        c, gh, gw = raw.shape
        obj = _sigmoid(raw.reshape(num_anchors, c // num_anchors, gh, gw)[:, 4]).max(axis=0)
        level = to_image(obj, det)
        heat = level if heat is None else np.maximum(heat, level)
    return heat


def _normalize(m: np.ndarray) -> np.ndarray:
    lo, hi = float(m.min()), float(m.max())
    return np.zeros_like(m) if hi - lo < 1e-12 else (m - lo) / (hi - lo)


def attention_maps(det: Detections) -> Dict[str, np.ndarray]:
    """Per attention block with a spatial gate: its map over the original image, scaled to [0, 1].

    CBAM: the spatial gate. CoordAtt: the mean over channels of the outer product of its height and width
    gates. GC: the softmax weights of its context pooling. SE and ECA have no spatial gate.
    """
    maps = {}
    for name, gates in det.gates.items():
        if "height" in gates and "width" in gates:  # CoordAtt: (C, H, 1) x (C, 1, W) -> (H, W)
            grid = (gates["height"] * gates["width"]).mean(axis=0)
        elif "spatial" in gates:
            grid = gates["spatial"][0]
        else:
            continue
        maps[name] = _normalize(to_image(grid, det))
    return maps


def mean_attention_map(det: Detections) -> np.ndarray:
    """All blocks' spatial maps averaged (each scaled to [0, 1]): where the neck attends overall."""
    maps = attention_maps(det)
    if not maps:
        raise ValueError("this model's attention blocks have no spatial gate (SE and ECA weight channels only)")
    return np.mean(list(maps.values()), axis=0)


def channel_weights(det: Detections, top: int = 5) -> Dict[str, List[Tuple[int, float]]]:
    """Per block with channel gates: the ``top`` channels and their weights, strongest first.

    SE, ECA and CBAM gates (``channel``) are sigmoid weights in (0, 1); GC's ``context``, when its block keeps
    it, is what it adds to each channel, ranked by magnitude.
    """
    result = {}
    for name, gates in det.gates.items():
        key = "channel" if "channel" in gates else "context" if "context" in gates else None
        if key is None:
            continue
        weights = gates[key].reshape(-1)
        order = np.argsort(-np.abs(weights))[:top]
        result[name] = [(int(i), float(weights[i])) for i in order]
    return result


def format_channel_weights(det: Detections, top: int = 5) -> List[str]:
    """One line per block: ``attn_p5: top channels 17 (0.98), 301 (0.97), ...``; a block whose channel gate
    is the same for every channel says so instead (a ranking of equal weights would mean nothing)."""
    lines = []
    for name, pairs in channel_weights(det, top).items():
        gates = det.gates[name]
        weights = gates["channel" if "channel" in gates else "context"].reshape(-1)
        if weights.size and np.ptp(weights) < 1e-6:
            # e.g. an SE / CBAM MLP whose hidden ReLUs are all off for this image: sigmoid(0) = 0.5 everywhere
            lines.append(f"{name}: every channel weighted {weights[0]:.3f} (the channel gate does not vary here)")
        else:
            lines.append(f"{name}: top channels " + ", ".join(f"{c} ({w:.3f})" for c, w in pairs))
    return lines
