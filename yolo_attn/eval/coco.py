"""COCO box AP through pycocotools' ``COCOeval``, for any dataset: ground truth is built in memory from
our records, so VOC, YOLO-txt and the embedded dataset get COCO numbers as well.

Conventions of the conversion:
- records hold 0-based continuous xyxy boxes; COCO boxes are ``[x, y, w, h]`` in the same continuous
  pixel space, so the conversion is exact (no +1: that is a VOC devkit convention only);
- a ground truth's ``area`` is its box area (COCO's own files use the segmentation area, which only
  changes which of small / medium / large a COCO object falls in);
- ``difficult`` ground truths (VOC difficult, COCO iscrowd) become ``iscrowd=1`` regions: pycocotools
  ignores detections on them rather than counting them wrong, as the VOC devkit does;
- results carry the dataset's original category ids (``dataset.category_ids[label]``), so the JSON
  written for a COCO dataset can be sent to the official evaluation server unchanged.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Dict, Hashable, Iterable, List, Optional, Sequence, Union

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

__all__ = ["COCO_STAT_NAMES", "coco_ground_truth", "coco_results", "evaluate_coco", "load_coco_ground_truth"]

# The 12 numbers COCOeval.summarize() prints, in its order.
COCO_STAT_NAMES = (
    "map", "map50", "map75", "map_small", "map_medium", "map_large",
    "ar1", "ar10", "ar100", "ar_small", "ar_medium", "ar_large",
)


def _json_id(image_id: Hashable) -> Hashable:
    """numpy integers are not JSON-serialisable; keep strings and ints as they are."""
    return int(image_id) if isinstance(image_id, (int, np.integer)) else image_id


def coco_ground_truth(records: Iterable[Any], category_ids: Sequence[int], names: Sequence[str]) -> COCO:
    """A pycocotools ``COCO`` ground truth from annotation records (``image_id``, ``path``, ``height``,
    ``width``, ``boxes`` (N, 4) 0-based xyxy, ``labels``, ``difficult``), without touching the disk."""
    images, annotations = [], []
    for rec in records:
        image_id = _json_id(rec.image_id)
        images.append({"id": image_id, "width": int(rec.width), "height": int(rec.height),
                       "file_name": Path(str(rec.path)).name if rec.path is not None else str(image_id)})
        boxes = np.asarray(rec.boxes, dtype=np.float64).reshape(-1, 4)
        difficult = np.zeros(len(boxes), bool) if rec.difficult is None else np.asarray(rec.difficult, bool)
        for box, label, crowd in zip(boxes, np.asarray(rec.labels).reshape(-1), difficult):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append({
                # ids start at 1: COCOeval stores the matched ground-truth id and reads 0 as "unmatched"
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": int(category_ids[int(label)]),
                "bbox": [float(box[0]), float(box[1]), float(w), float(h)],
                "area": float(w * h),
                "iscrowd": int(crowd),
            })
    gt = COCO()
    gt.dataset = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": int(cid), "name": str(name)} for cid, name in zip(category_ids, names)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def coco_results(
    image_ids: Sequence[Hashable], detections: Sequence[np.ndarray], category_ids: Sequence[int]
) -> List[Dict[str, Any]]:
    """COCO results entries from per-image (K, 6) ``[x1, y1, x2, y2, score, label]`` arrays in original
    image pixels. Boxes are rounded to 1/1000 px and scores to 1e-5, as in the files people submit."""
    category_ids = np.asarray(category_ids, dtype=np.int64)
    results = []
    for image_id, det in zip(image_ids, detections):
        det = np.asarray(det, dtype=np.float64).reshape(-1, 6)
        xywh = np.round(np.concatenate([det[:, :2], det[:, 2:4] - det[:, :2]], axis=1), 3)
        scores = np.round(det[:, 4], 5)
        cats = category_ids[det[:, 5].astype(np.int64)]
        image_id = _json_id(image_id)
        results.extend(
            {"image_id": image_id, "category_id": int(c), "bbox": b, "score": float(s)}
            for b, s, c in zip(xywh.tolist(), scores, cats)
        )
    return results


def _load_results(gt: COCO, results: List[Dict[str, Any]]) -> COCO:
    if results:
        # loadRes adds segmentation, area, id and iscrowd to the dicts it is given: copies keep the caller's records
        # (predictions.json) in the plain COCO results format
        return gt.loadRes([dict(r) for r in results])
    # COCO.loadRes cannot take an empty list (it reads results[0]); an empty result set is still valid.
    empty = COCO()
    empty.dataset = {"images": list(gt.dataset["images"]), "categories": list(gt.dataset["categories"]),
                     "annotations": []}
    empty.createIndex()
    return empty


def load_coco_ground_truth(path: Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]],
                           id_prefixes: Optional[Sequence[str]] = None) -> COCO:
    """An instances JSON as a ``COCO`` object, quietly; the official files keep crowd regions and mask
    areas, which records leave out, so scoring against them gives the official numbers.

    Several JSONs (a split with several entries) are merged in memory: image ids get the entry's prefix from
    ``id_prefixes`` (as :class:`~yolo_attn.data.coco.COCODataset` names its records when ids collide); the
    categories are the first file's (the dataset checked they agree). Annotation ids are renumbered from 1,
    in one file too: COCOeval reads a matched id 0 as "unmatched", and exports often count from 0."""
    paths = [Path(path)] if isinstance(path, (str, os.PathLike)) else [Path(p) for p in path]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no such COCO annotation file")
    prefixes = list(id_prefixes) if id_prefixes is not None else [""] * len(paths)
    gt = COCO()  # filled here, not by COCO(path): its json.load fails on a byte-order mark
    merged: Dict[str, List[Any]] = {"images": [], "annotations": [], "categories": []}
    for p, prefix in zip(paths, prefixes):
        data = json.loads(p.read_text(encoding="utf-8-sig"))
        rename = (lambda i, prefix=prefix: f"{prefix}{i}") if prefix else (lambda i: i)
        merged["images"] += [{**img, "id": rename(img["id"])} for img in data["images"]]
        boxed = [(ann, box) for ann in data.get("annotations") or [] if (box := _box_of(ann)) is not None]
        merged["annotations"] += [_complete({**ann, "image_id": rename(ann.get("image_id")),
                                             "id": len(merged["annotations"]) + k + 1}, box)  # 0: "unmatched"
                                  for k, (ann, box) in enumerate(boxed)]
        merged["categories"] = merged["categories"] or data["categories"]
    gt.dataset = merged
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def _box_of(ann: Dict[str, Any]) -> Optional[List[float]]:
    """The annotation's [x, y, w, h] as four finite numbers, or None: one without (``"bbox": null``, missing,
    malformed) is left out, as the dataset drops and reports it."""
    try:
        box = [float(v) for v in ann.get("bbox")]
    except (TypeError, ValueError):
        return None
    return box if len(box) == 4 and all(math.isfinite(v) for v in box) else None


def _complete(ann: Dict[str, Any], box: List[float]) -> Dict[str, Any]:
    """``ann`` with its ``box`` (:func:`_box_of`), and ``iscrowd`` and ``area``, which COCOeval reads from every
    annotation, where a hand-made or converted file leaves them out: not a crowd (as the dataset reads it) and
    the box's area (the official files give the mask's; detectron2 and YOLOX fill in the box's alike)."""
    return {**ann, "bbox": box, "iscrowd": ann.get("iscrowd") or 0,
            "area": ann["area"] if ann.get("area") is not None else box[2] * box[3]}


def evaluate_coco(
    gt: COCO,
    results: List[Dict[str, Any]],
    image_ids: Optional[Sequence[Hashable]] = None,
    category_ids: Optional[Sequence[int]] = None,
    verbose: bool = False,
) -> Dict[str, Any]:
    """Run ``COCOeval`` (bbox) on ``results`` against ``gt``, over ``image_ids`` and ``category_ids``
    (default: all of ``gt``'s; give them to score a subset, e.g. the images that could be read).

    Returns:
        dict with the 12 summary numbers under :data:`COCO_STAT_NAMES` (``map`` is AP@[.5:.95],
        ``map50``/``map75`` AP at IoU 0.5/0.75; NaN where pycocotools reports -1, i.e. no ground truth),
        ``stats`` (pycocotools' raw list, -1 kept), and per category in ascending id order
        ``category_ids``, ``ap`` (AP@[.5:.95]) and ``ap50``, NaN for a category without ground truth.
        pycocotools' prints are shown only when ``verbose``.
    """
    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with quiet:
        coco_eval = COCOeval(gt, _load_results(gt, results), iouType="bbox")
        if image_ids is not None:
            coco_eval.params.imgIds = sorted(_json_id(i) for i in image_ids)
        if category_ids is not None:
            coco_eval.params.catIds = sorted(int(c) for c in category_ids)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    stats = [float(s) for s in coco_eval.stats]
    out: Dict[str, Any] = {name: (math.nan if s < 0 else s) for name, s in zip(COCO_STAT_NAMES, stats)}
    out["stats"] = stats
    # precision: [IoU thresholds, recall points, categories, area ranges, max dets]; area "all", 100 dets.
    precision = coco_eval.eval["precision"][:, :, :, 0, -1]

    def mean_valid(p: np.ndarray) -> float:
        p = p[p > -1]
        return float(p.mean()) if p.size else math.nan

    out["category_ids"] = [int(c) for c in coco_eval.params.catIds]
    out["ap"] = [mean_valid(precision[:, :, k]) for k in range(precision.shape[2])]
    iou50 = int(np.argmin(np.abs(coco_eval.params.iouThrs - 0.5)))
    out["ap50"] = [mean_valid(precision[iou50, :, k]) for k in range(precision.shape[2])]
    return out

