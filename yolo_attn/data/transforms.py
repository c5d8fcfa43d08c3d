"""Training transforms: mosaic, random scale / translate, mixup, then albumentations (flip, colour, blur, noise).

One sample goes through, in order:

1. placement: one image, or with probability ``mosaic`` four images tiled around a random centre of a
   2S x 2S canvas (images at letterbox scale, i.e. longest side S);
2. random scale in ``[1 - scale, 1 + scale]`` and translation of up to ``translate * S``, fused with the
   letterbox (or the mosaic's centre crop) into a single ``cv2.warpAffine`` to the S x S output: one
   interpolation instead of three, and the warp reads only what lands in the output (albumentations'
   ``Affine`` would warp the whole 2S canvas). Boxes map exactly (no rotation or shear), are clipped, and
   are dropped when narrower or lower than ``min_size`` px or left with less than ``min_visibility`` of
   their area;
3. with probability ``mixup`` (only while mosaic is on), a second sample made the same way is blended in
   (weight ~ Beta(32, 32)) and its boxes added;
4. albumentations, bbox-aware: horizontal / vertical flip, colour jitter (hue, saturation, brightness),
   blur and Gaussian noise, with the same minimum-area and visibility filters.

Boxes are absolute xyxy in the S x S output's pixels throughout. Every random draw comes from the
``numpy.random.Generator`` passed in (albumentations is re-seeded from it), so a sample depends only on
(seed, epoch, index), not on which worker made it.
"""
from __future__ import annotations

import math
import os
import random
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no PyPI version check from inside workers

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402

from .letterbox import PAD_VALUE  # noqa: E402

__all__ = ["DEFAULT_AUG", "TrainTransform", "check_aug", "mosaic_canvas", "random_affine"]

DEFAULT_AUG: Dict[str, float] = {
    "mosaic": 1.0,          # probability of a 4-image mosaic
    "mixup": 0.1,           # probability of blending in a second sample (only while mosaic is on)
    "scale": 0.5,           # random scale in [1 - scale, 1 + scale]
    "translate": 0.1,       # random shift, fraction of the image size
    "flip": 0.5,            # horizontal flip probability
    "flipud": 0.0,          # vertical flip probability
    "hsv_h": 0.015,         # hue jitter, fraction of the colour circle
    "hsv_s": 0.7,           # saturation gain in [1 - hsv_s, 1 + hsv_s]
    "hsv_v": 0.4,           # brightness gain in [1 - hsv_v, 1 + hsv_v]
    "blur": 0.01,           # probability of a 3-5 px blur
    "noise": 0.01,          # probability of Gaussian noise (std 2-8 % of the range)
    "min_size": 2.0,        # boxes narrower or lower than this many px after a transform are dropped
    "min_visibility": 0.2,  # boxes left with less than this fraction of their area are dropped
}

Sample = Tuple[np.ndarray, np.ndarray, np.ndarray]  # image (H, W, 3) uint8, boxes (N, 4) float32, labels (N,)


# Each option's range: (low, high, high included). Probabilities and fractions; scale below 1 so that the
# smallest scale stays above 0; hue at most half the colour circle (albumentations' bound); the saturation and
# brightness gains 1 -+ x stay at or above 0.
_AUG_RANGES = {
    **{key: (0.0, 1.0, True) for key in ("mosaic", "mixup", "flip", "flipud", "blur", "noise", "min_visibility",
                                         "translate", "hsv_s", "hsv_v")},
    "scale": (0.0, 1.0, False),
    "hsv_h": (0.0, 0.5, True),
    "min_size": (0.0, math.inf, True),
}


def check_aug(aug: Optional[Mapping[str, Any]]) -> Dict[str, float]:
    """DEFAULT_AUG updated with ``aug``; unknown keys and values out of range are an error naming the option (a
    typo would silently do nothing, and a negative range fail only at the first batch)."""
    if aug is not None and not isinstance(aug, Mapping):
        raise ValueError(f"aug: {aug!r} is not a mapping of augmentation options, e.g. {{mosaic: 0.5}} "
                         f"(--aug.mosaic 0.5 on the command line)")
    aug = dict(aug or {})
    unknown = sorted(set(aug) - set(DEFAULT_AUG))
    if unknown:
        raise ValueError(f"unknown augmentation option(s) {unknown}; known: {sorted(DEFAULT_AUG)}")
    out = dict(DEFAULT_AUG)
    for key, value in aug.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"augmentation option {key}={value!r} is not a number")
        low, high, closed = _AUG_RANGES[key]
        if not (low <= value and (value <= high if closed else value < high)):  # NaN fails too
            bounds = f"at least {low:g}" if math.isinf(high) else f"in [{low:g}, {high:g}{']' if closed else ')'}"
            raise ValueError(f"augmentation option {key}={value} must be {bounds}")
        out[key] = float(value)
    return out


def box_areas(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def filter_boxes(clipped: np.ndarray, full_areas: np.ndarray, min_size: float, min_visibility: float) -> np.ndarray:
    """Mask of boxes to keep: clipped box at least ``min_size`` px wide and high and keeping at least
    ``min_visibility`` of the object's whole area (``full_areas``, in the same pixels)."""
    w, h = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    return (w >= max(min_size, 1e-3)) & (h >= max(min_size, 1e-3)) & (w * h >= min_visibility * full_areas)


def random_affine(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, size: int, scale: float,
                  translate: float, rng: np.random.Generator, min_size: float = 2.0,
                  min_visibility: float = 0.2, gain: float = 1.0, full_areas: Optional[np.ndarray] = None
                  ) -> Sample:
    """Scale ``image`` by ``gain * u`` (u ~ U[1 - scale, 1 + scale]) about its centre, put that centre at
    the output's centre shifted by up to ``translate * size``, and crop / pad to ``size`` x ``size``.

    ``gain`` is the letterbox scale for a single image, 1 for a mosaic canvas (whose centre crop is the
    output). ``full_areas``: the objects' whole areas in ``image``'s pixels when ``boxes`` were already
    clipped (a mosaic's tiles), so that visibility counts both cuts, not each on its own. Returns the
    image, the boxes mapped, clipped and filtered, and their labels."""
    h, w = image.shape[:2]
    s = gain * rng.uniform(1 - scale, 1 + scale)
    tx, ty = rng.uniform(-translate, translate, 2) * size
    ox, oy = size / 2 + tx - s * w / 2, size / 2 + ty - s * h / 2  # continuous coordinates: x' = s x + o
    # warpAffine addresses pixels by index (pixel i is centred at i + 0.5 in continuous coordinates)
    m = np.array([[s, 0, ox + 0.5 * (s - 1)], [0, s, oy + 0.5 * (s - 1)]], np.float32)
    # INTER_AREA would alias less when shrinking, but warpAffine has no area mode; shrinking past 0.5 is rare
    out = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=(PAD_VALUE,) * 3)
    if len(boxes):
        mapped = boxes * s + np.array([ox, oy, ox, oy], np.float32)
        clipped = mapped.clip(0, size)
        areas = box_areas(mapped) if full_areas is None else full_areas * s * s
        keep = filter_boxes(clipped, areas, min_size, min_visibility)
        boxes, labels = clipped[keep], labels[keep]
    return out, boxes.astype(np.float32).reshape(-1, 4), labels


def mosaic_canvas(tiles: Sequence[Sample], size: int, rng: np.random.Generator, min_visibility: float = 0.2,
                  ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Four (image, boxes, labels) tiles, each at most ``size`` on its longest side, around a random
    centre of a 2*size canvas (top-left, top-right, bottom-left, bottom-right; as in YOLOv4/v5).
    Boxes are clipped to their tile; those keeping less than ``min_visibility`` of their area are dropped.
    Returns the canvas, boxes, labels and each kept box's whole area before clipping (for
    :func:`random_affine`'s ``full_areas``)."""
    s = size
    canvas = np.full((2 * s, 2 * s, 3), PAD_VALUE, np.uint8)
    xc, yc = (int(v) for v in rng.uniform(0.5 * s, 1.5 * s, 2))
    all_boxes, all_labels, all_areas = [], [], []
    for k, (img, boxes, labels) in enumerate(tiles):
        h, w = img.shape[:2]
        if k == 0:    # canvas region (x1a..x2a, y1a..y2a) <- image region (x1b..x2b, y1b..y2b)
            x1a, y1a, x2a, y2a = max(xc - w, 0), max(yc - h, 0), xc, yc
            x1b, y1b, x2b, y2b = w - (x2a - x1a), h - (y2a - y1a), w, h
        elif k == 1:
            x1a, y1a, x2a, y2a = xc, max(yc - h, 0), min(xc + w, 2 * s), yc
            x1b, y1b, x2b, y2b = 0, h - (y2a - y1a), min(w, x2a - x1a), h
        elif k == 2:
            x1a, y1a, x2a, y2a = max(xc - w, 0), yc, xc, min(2 * s, yc + h)
            x1b, y1b, x2b, y2b = w - (x2a - x1a), 0, w, min(y2a - y1a, h)
        else:
            x1a, y1a, x2a, y2a = xc, yc, min(xc + w, 2 * s), min(2 * s, yc + h)
            x1b, y1b, x2b, y2b = 0, 0, min(w, x2a - x1a), min(y2a - y1a, h)
        canvas[y1a:y2a, x1a:x2a] = img[y1b:y2b, x1b:x2b]
        if len(boxes):
            shifted = boxes + np.array([x1a - x1b, y1a - y1b] * 2, np.float32)
            # a tile shows only part of its image: clip to the tile, keep what stays visible enough
            clipped = np.stack([shifted[:, 0].clip(x1a, x2a), shifted[:, 1].clip(y1a, y2a),
                                shifted[:, 2].clip(x1a, x2a), shifted[:, 3].clip(y1a, y2a)], 1)
            areas = box_areas(shifted)
            keep = filter_boxes(clipped, areas, 1.0, min_visibility)
            all_boxes.append(clipped[keep])
            all_labels.append(labels[keep])
            all_areas.append(areas[keep])
    boxes = np.concatenate(all_boxes) if all_boxes else np.zeros((0, 4), np.float32)
    labels = np.concatenate(all_labels) if all_labels else np.zeros(0, np.int64)
    areas = np.concatenate(all_areas) if all_areas else np.zeros(0, np.float32)
    return canvas, boxes.astype(np.float32), labels.astype(np.int64), areas.astype(np.float32)


class TrainTransform:
    """The training pipeline (see the module docstring). ``load(index)`` gives (image at letterbox scale,
    boxes, labels); ``pick(rng)`` a random other index. Call with the sample's index and generator."""

    def __init__(self, size: int, aug: Optional[Mapping[str, Any]] = None):
        self.size = int(size)
        self.aug = check_aug(aug)
        a = self.aug
        colour = a["hsv_h"] > 0 or a["hsv_s"] > 0 or a["hsv_v"] > 0
        self.albu = A.Compose(
            [
                A.HorizontalFlip(p=a["flip"]),
                A.VerticalFlip(p=a["flipud"]),
                A.ColorJitter(brightness=a["hsv_v"], contrast=0.0, saturation=a["hsv_s"], hue=a["hsv_h"],
                              p=1.0 if colour else 0.0),
                A.Blur(blur_limit=(3, 5), p=a["blur"]),
                A.GaussNoise(std_range=(0.02, 0.08), p=a["noise"]),
            ],
            bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"], min_area=a["min_size"] ** 2,
                                     min_visibility=a["min_visibility"], min_width=a["min_size"],
                                     min_height=a["min_size"], clip=True, filter_invalid_bboxes=True),
            seed=0,
        )

    def place(self, index: int, load: Callable[[int], Sample], pick: Callable[[np.random.Generator], int],
              rng: np.random.Generator, mosaic: bool) -> Sample:
        """Steps 1-2: one image or a mosaic, randomly scaled and translated into size x size."""
        a = self.aug
        if mosaic and rng.random() < a["mosaic"]:
            tiles = [load(index)] + [load(pick(rng)) for _ in range(3)]
            canvas, boxes, labels, areas = mosaic_canvas(tiles, self.size, rng, a["min_visibility"])
            return random_affine(canvas, boxes, labels, self.size, a["scale"], a["translate"], rng,
                                 a["min_size"], a["min_visibility"], full_areas=areas)
        image, boxes, labels = load(index)
        gain = self.size / max(image.shape[:2])  # 1 for images already at letterbox scale
        return random_affine(image, boxes, labels, self.size, a["scale"], a["translate"], rng,
                             a["min_size"], a["min_visibility"], gain)

    def __call__(self, index: int, load: Callable[[int], Sample], pick: Callable[[np.random.Generator], int],
                 rng: np.random.Generator, mosaic: bool = True) -> Sample:
        image, boxes, labels = self.place(index, load, pick, rng, mosaic)
        if mosaic and rng.random() < self.aug["mixup"]:
            image2, boxes2, labels2 = self.place(pick(rng), load, pick, rng, mosaic)
            r = rng.beta(32.0, 32.0)
            image = cv2.addWeighted(image, r, image2, 1.0 - r, 0.0)
            boxes, labels = np.concatenate([boxes, boxes2]), np.concatenate([labels, labels2])
        # One stream for all of them: set_random_seed gives every transform a generator of the same seed, so
        # their first draws were equal and horizontal and vertical flips, blur and brightness went together
        seed = int(rng.integers(2**31))
        self.albu.set_random_state(np.random.default_rng(seed), random.Random(seed))
        out = self.albu(image=image, bboxes=boxes, labels=labels)
        boxes = np.asarray(out["bboxes"], np.float32).reshape(-1, 4)
        labels = np.asarray(out["labels"], np.int64).reshape(-1)
        return out["image"], boxes, labels
