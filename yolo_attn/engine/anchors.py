"""Anchors for a dataset: how well a set fits its boxes, and a set fitted to them.

The check is YOLOv5's: a box is reachable by an anchor when both its width and height ratios to it lie
within ``anchor_t`` (the ``multi`` assigner's bound); best possible recall (BPR) is the share of boxes some
anchor reaches. The fit is k-means on the box sizes (Darknet's ``calc_anchors``; scipy does the k-means),
then a short evolution that maximises the mean best-anchor ratio (YOLOv5's autoanchor). That last step is
written here because no library optimises this fitness.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy.cluster.vq import kmeans

from ..data.records import target_mask

__all__ = ["anchor_fit", "anchors_from_config", "box_sizes", "check_anchors", "fit_anchors", "parse_anchors",
           "split_masks"]

log = logging.getLogger("yolo_attn.train")

MIN_BOX = 2.0  # px at the training size: smaller boxes are noise for anchor shapes (YOLOv5 drops them too)


def box_sizes(dataset: Any, img_size: int) -> np.ndarray:
    """(N, 2) widths and heights of every training box of ``dataset`` at training scale (longest image side
    ``img_size``, as the letterbox makes it); boxes under 2 px are left out, and difficult ones (COCO's crowd
    regions) unless the dataset trains on them."""
    sizes = []
    with_difficult = bool(getattr(dataset, "include_difficult", False))
    for i in range(len(dataset)):
        record = dataset.get_annotation(i)
        boxes = record.boxes[target_mask(record.difficult, with_difficult)]
        if len(boxes):
            gain = img_size / max(record.height, record.width)
            sizes.append((boxes[:, 2:] - boxes[:, :2]) * gain)
    wh = np.concatenate(sizes).astype(np.float64) if sizes else np.zeros((0, 2))
    return wh[(wh >= MIN_BOX).all(1)]


def _best_ratios(anchors: np.ndarray, wh: np.ndarray) -> np.ndarray:
    """(N, A): for each box and anchor, the worse of the width and height ratios, folded into (0, 1]."""
    r = wh[:, None] / anchors[None]
    return np.minimum(r, 1 / r).min(2)


def _fitness(anchors: np.ndarray, wh: np.ndarray, anchor_t: float) -> float:
    best = _best_ratios(anchors, wh).max(1)
    return float((best * (best > 1 / anchor_t)).mean())


def anchor_fit(anchors: Sequence[Sequence[float]], wh: np.ndarray, anchor_t: float = 4.0) -> Dict[str, float]:
    """How well ``anchors`` fit boxes of sizes ``wh``: ``bpr`` (share of boxes within ``anchor_t`` of some
    anchor), ``anchors_per_box`` (mean count of anchors within it) and ``fitness`` (mean best ratio,
    counting only reachable boxes)."""
    a = np.asarray(anchors, dtype=np.float64).reshape(-1, 2)
    if len(wh) == 0:
        return {"bpr": 1.0, "anchors_per_box": 0.0, "fitness": 0.0}
    ratios = _best_ratios(a, wh)
    return {"bpr": float((ratios.max(1) > 1 / anchor_t).mean()),
            "anchors_per_box": float((ratios > 1 / anchor_t).sum(1).mean()),
            "fitness": _fitness(a, wh, anchor_t)}


def fit_anchors(wh: np.ndarray, n: int = 6, anchor_t: float = 4.0, generations: int = 1000,
                seed: int = 0, max_boxes: int = 10000) -> np.ndarray:
    """``n`` anchors (w, h) fitted to box sizes ``wh`` (a random ``max_boxes`` of them at most), sorted by
    area: k-means, then ``generations`` rounds of random multiplicative mutations kept when they raise the
    fitness."""
    if len(wh) < n:
        raise ValueError(f"cannot fit {n} anchors to {len(wh)} boxes (at least 2 px): the dataset has too few boxes")
    rng = np.random.default_rng(seed)
    if len(wh) > max_boxes:  # a sample fits as well, and keeps the evolution to seconds on COCO's 860k boxes
        wh = wh[rng.choice(len(wh), max_boxes, replace=False)]
    std = wh.std(0)
    std[std == 0] = 1.0
    # Our own seeded starts (kmeans' seed keyword differs between scipy versions); the lowest distortion wins
    starts = [wh[rng.choice(len(wh), n, replace=False)] / std for _ in range(10)]
    centres = min((kmeans(wh / std, start) for start in starts), key=lambda fit: fit[1])[0]
    anchors = centres * std
    if len(anchors) < n:  # k-means merges clusters of identical sizes: top up from the boxes themselves
        anchors = np.concatenate([anchors, wh[rng.choice(len(wh), n - len(anchors), replace=False)]])
    best = _fitness(anchors, wh, anchor_t)
    for _ in range(generations):
        mutate = rng.random(anchors.shape) < 0.9
        factor = np.clip(1 + mutate * rng.standard_normal(anchors.shape) * 0.1 * rng.random(), 0.3, 3.0)
        candidate = (anchors * factor).clip(MIN_BOX)
        score = _fitness(candidate, wh, anchor_t)
        if score > best:
            anchors, best = candidate, score
    return anchors[np.argsort(anchors.prod(1))]


def parse_anchors(value: Any) -> List[Tuple[float, float]]:
    """Anchors from a config: pairs ``[[10, 14], [23, 27], ...]`` or Darknet's flat ``[10, 14, 23, 27, ...]``
    (also as the cfg's text ``"10,14, 23,27, ..."``)."""
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    try:
        flat = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise ValueError(f"anchors must be numbers, as [[w, h], ...] or [w, h, w, h, ...]; got {value!r}") from e
    if len(flat) < 4 or len(flat) % 4 or (flat <= 0).any():
        raise ValueError(f"anchors must be an even count of positive (w, h) pairs, half per head; got {value!r}")
    return [(float(w), float(h)) for w, h in flat.reshape(-1, 2)]


def split_masks(n: int) -> List[List[int]]:
    """Masks for ``n`` anchors sorted by area: the larger half on the stride-32 head, the rest on stride 16."""
    return [list(range(n // 2, n)), list(range(n // 2))]


def check_anchors(anchors: Sequence[Sequence[float]], wh: np.ndarray, anchor_t: float,
                  warn_below: float = 0.98) -> Dict[str, float]:
    """Log how well the anchors in use fit the training boxes; warn when some boxes are out of reach."""
    fit = anchor_fit(anchors, wh, anchor_t)
    text = (f"anchors: {fit['anchors_per_box']:.2f} anchors per box, best possible recall {fit['bpr']:.4f} "
            f"(within anchor_t {anchor_t:g}, {len(wh)} training boxes)")
    if fit["bpr"] < warn_below:
        log.warning("%s: %.1f %% of the boxes no anchor can learn; fit anchors to the data with --anchors fit",
                    text, 100 * (1 - fit["bpr"]))
    else:
        log.info(text)
    return fit


def anchors_from_config(value: Any, masks: Optional[Sequence[Sequence[int]]], wh: Optional[np.ndarray],
                        anchor_t: float = 4.0, seed: int = 0) -> Tuple[List[Tuple[float, float]], List[List[int]]]:
    """The ``anchors`` / ``anchor_masks`` config keys made concrete: ``"fit"`` fits anchors to the box sizes
    ``wh`` (six, or as many as the masks index); a list is taken as given. Without masks the anchors are
    sorted by area and split in halves (:func:`split_masks`)."""
    if value is None:
        raise ValueError(f"anchor_masks {list(masks or [])} needs the anchors they index: set anchors too")
    if value == "fit":
        if wh is None:
            raise ValueError("anchors: fit needs the training boxes")
        n = max(max(m) for m in masks) + 1 if masks else 6
        anchors = [tuple(map(float, a)) for a in fit_anchors(wh, n, anchor_t, seed=seed)]
        log.info("anchors fitted to %d training boxes: %s (fitness %.3f)", len(wh),
                 ",  ".join(f"{w:.0f},{h:.0f}" for w, h in anchors), _fitness(np.asarray(anchors), wh, anchor_t))
    else:
        anchors = parse_anchors(value)
    if masks:
        return anchors, [list(map(int, m)) for m in masks]
    return sorted(anchors, key=lambda a: a[0] * a[1]), split_masks(len(anchors))
