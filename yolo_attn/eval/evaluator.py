"""Evaluate a detector on a dataset: letterbox, infer, decode, NMS, map boxes back, then score
with VOC07 / VOC12 (devkit) and COCO (pycocotools) metrics. Used by tools/eval.py and, every epoch,
by the trainer (with its EMA model); nothing here depends on the training code."""
from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, Hashable, List, Mapping, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from pycocotools.coco import COCO
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..data.letterbox import PAD_VALUE, check_resize, fit_to_input, unletterbox_boxes
from ..models import STRIDES, augmented_decode, check_input_size, decode_outputs, postprocess
from ..models.tta import DEFAULT_FLIPS, DEFAULT_SCALES, check_views
from ..utils.paths import write_atomic
from .coco import coco_ground_truth, coco_results, evaluate_coco, load_coco_ground_truth
from .confusion import CONFUSION_CONF, CONFUSION_IOU, best_f1_point, confusion_matrix
from .plots import plot_confusion_matrix, plot_pr_curves
from .voc import evaluate_detection_arrays

__all__ = ["METRICS", "GroundTruth", "evaluate"]

METRICS = ("voc07", "voc12", "coco")

# Records hold 0-based continuous xyxy boxes (VOC's xmin - 1 .. xmax). The VOC devkit scores 1-based,
# pixel-inclusive boxes (it adds 1 to widths and heights), so both ground truth and detections are
# shifted by (+1, +1, 0, 0) back into devkit coordinates before scoring; without the shift every IoU
# would be slightly off and numbers would not match the devkit's.
_TO_DEVKIT = np.array([1.0, 1.0, 0.0, 0.0])


def _first_repeated(ids: Sequence[Hashable]) -> Optional[Hashable]:
    seen: set = set()
    for i in ids:
        if i in seen:
            return i
        seen.add(i)
    return None


@dataclass
class GroundTruth:
    """The annotation of one evaluated image (a record without its pixels)."""

    image_id: Hashable
    path: Optional[str]
    height: int
    width: int
    boxes: np.ndarray  # (N, 4) float, 0-based continuous xyxy
    labels: np.ndarray  # (N,) int64
    difficult: np.ndarray  # (N,) bool


class _LetterboxedImages(Dataset):
    """Loads records and letterboxes their images; a sample that fails to load comes back as an error
    item (reported and skipped by :func:`evaluate`) instead of killing the loader worker."""

    def __init__(self, dataset: Any, img_size: Union[int, Tuple[int, int]], interpolation: int, pad_value: int,
                 resize: str = "letterbox"):
        self.dataset = dataset
        self.img_size = img_size
        self.interpolation = interpolation
        self.pad_value = pad_value
        self.resize = resize

    def __len__(self) -> int:
        return len(self.dataset)

    def _path(self, index: int) -> str:
        try:
            return str(self.dataset.get_annotation(index).path)
        except Exception:
            return f"sample {index}"

    def __getitem__(self, index: int) -> Dict[str, Any]:
        start = time.perf_counter()
        try:
            rec = self.dataset.load_record(index)
            image = None if rec is None else rec.image
            if image is None:
                raise ValueError("image could not be read")
            image = np.asarray(image)
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
            boxed, info = fit_to_input(image, self.img_size, self.resize, self.pad_value, self.interpolation)
            boxes = np.asarray(rec.boxes, dtype=np.float64).reshape(-1, 4)
            labels = np.asarray(rec.labels, dtype=np.int64).reshape(-1)
            difficult = (np.zeros(len(labels), bool) if rec.difficult is None
                         else np.asarray(rec.difficult, dtype=bool).reshape(-1))
            if not len(boxes) == len(labels) == len(difficult):
                raise ValueError(f"{len(boxes)} boxes, {len(labels)} labels and {len(difficult)} difficult flags")
        except Exception as e:  # any bad sample: report it, evaluate the rest
            message, path = str(e), self._path(index)
            return {"index": index, "error": message if path in message else f"{path}: {message}"}
        gt = GroundTruth(rec.image_id, None if rec.path is None else str(rec.path), image.shape[0], image.shape[1],
                         boxes, labels, difficult)
        tensor = torch.from_numpy(np.ascontiguousarray(boxed.transpose(2, 0, 1)))  # uint8: 4x less to move
        return {"index": index, "image": tensor, "info": info, "gt": gt, "seconds": time.perf_counter() - start}


def _collate(items: List[Dict[str, Any]]) -> Tuple[Optional[torch.Tensor], List[Dict[str, Any]], List[Dict[str, Any]]]:
    good = [it for it in items if "error" not in it]
    bad = [it for it in items if "error" in it]
    return (torch.stack([it["image"] for it in good]) if good else None), good, bad


def _cv2_interpolation(value: Union[str, int]) -> int:
    """cv2 flag of an interpolation as checkpoints store it: a name ("linear", "bicubic", "area", ...) or a flag."""
    if isinstance(value, int):
        return value
    name = {"bilinear": "linear", "bicubic": "cubic"}.get(value.lower(), value.lower())
    flag = getattr(cv2, f"INTER_{name.upper()}", None)
    if not isinstance(flag, int):
        raise ValueError(f"unknown interpolation {value!r} in the pre-processing settings "
                         "(nearest, linear, cubic, area, lanczos4)")
    return flag


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _uses_channels_last(model: torch.nn.Module) -> bool:
    weight = next((p for p in model.parameters() if p.dim() == 4), None)
    return weight is not None and weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()


def _flatten(gts: List[GroundTruth], detections: List[np.ndarray]) -> Dict[str, np.ndarray]:
    """All ground truths and detections as flat arrays, with the position of their image."""
    n_gt = [len(g.labels) for g in gts]
    n_det = [len(d) for d in detections]
    det = np.concatenate(detections).astype(np.float64) if detections else np.zeros((0, 6))
    return {
        "gt_image": np.repeat(np.arange(len(gts)), n_gt),
        "gt_boxes": np.concatenate([g.boxes for g in gts]) if gts else np.zeros((0, 4)),
        "gt_class": np.concatenate([g.labels for g in gts]) if gts else np.zeros(0, np.int64),
        "gt_difficult": np.concatenate([g.difficult for g in gts]) if gts else np.zeros(0, bool),
        "det_image": np.repeat(np.arange(len(detections)), n_det),
        "det_boxes": det[:, :4],
        "det_score": det[:, 4],
        "det_class": det[:, 5].astype(np.int64),
    }


def _voc(flat: Dict[str, np.ndarray], num_classes: int, use_07_metric: bool) -> Dict[str, Any]:
    return evaluate_detection_arrays(
        flat["det_image"], flat["det_class"], flat["det_score"], flat["det_boxes"] + _TO_DEVKIT,
        flat["gt_image"], flat["gt_class"], flat["gt_boxes"] + _TO_DEVKIT, flat["gt_difficult"],
        num_classes, iou_threshold=0.5, use_07_metric=use_07_metric,
    )


def evaluate(
    model: torch.nn.Module,
    dataset: Any,
    img_size: Union[int, Tuple[int, int]] = 416,
    batch_size: int = 16,
    conf_threshold: float = 0.001,
    iou_threshold: float = 0.5,
    metrics: Sequence[str] = METRICS,
    device: Union[str, torch.device, None] = None,
    workers: int = 0,
    amp_dtype: Optional[torch.dtype] = None,
    max_det: int = 300,
    scale_x_y: float = 1.05,
    max_candidates: int = 30000,
    preprocess: Optional[Mapping[str, Any]] = None,
    coco_gt: Union[None, str, os.PathLike, COCO] = None,
    output_dir: Union[str, Path, None] = None,
    save_json: bool = True,
    verbose: bool = True,
    augment: bool = False,
    augment_scales: Sequence[float] = DEFAULT_SCALES,
    augment_flips: Sequence[bool] = DEFAULT_FLIPS,
    nms: str = "iou",
    resize: str = "letterbox",
) -> Dict[str, Any]:
    """Run ``model`` over every image of ``dataset`` and score its detections.

    Args:
        model: a YoloV4Tiny (anything with ``num_classes``, ``level_anchors()`` and the raw-map forward).
            Put in eval mode for the run; its train/eval mode is restored afterwards.
        dataset: ``names``, ``len()``, ``load_record(i)`` (image (H, W, 3) uint8 RGB, boxes (N, 4) 0-based
            xyxy, labels, difficult, image_id, path), ``get_annotation(i)``, and optionally
            ``category_ids`` (label -> original category id, used in the COCO results).
        conf_threshold, iou_threshold, max_det: post-processing (score threshold, NMS IoU, boxes per image);
            multi-label NMS, as mAP is measured.
        nms: "iou" (torchvision's), "darknet" (Darknet's greedy DIoU NMS, see ``models.darknet_nms``) or
            "darknet-iou" (Darknet's default, which is torchvision's here: every class is kept per box).
        resize: "letterbox" (keep the aspect ratio, as the models trained here saw), "darknet-letterbox"
            (Darknet's ``letter_box=1``, see ``data.letterbox.darknet_letterbox``) or "stretch" (to the input
            size, as Darknet's ``detector map`` without ``letter_box``; see ``data.letterbox.stretch``).
        metrics: any of "voc07" (11-point AP@0.5), "voc12" (area AP@0.5), "coco" (pycocotools AP@[.5:.95]...).
        device: where to run; None keeps the model where it is (otherwise the model is moved there).
        workers: DataLoader worker processes for image loading and letterboxing.
        amp_dtype: autocast dtype for inference (e.g. torch.bfloat16 where bf16 is fast), None for fp32.
        scale_x_y: the decoding's grid sensitivity the model was trained with (checkpoint meta ``scale_x_y``).
        max_candidates: highest-scoring boxes per image that enter NMS. An untrained model puts every box
            above ``conf_threshold`` and NMS then dominates the time (about 0.4 s per 416 px image with 10
            classes on 2 cores); a lower value (e.g. 3000) speeds up early-epoch evaluation.
        preprocess: the checkpoint's ``meta["preprocess"]``, e.g. ``{"interpolation": "bicubic", "pad_value": 128}``
            for the port's weights; None is our letterbox (bilinear, grey 128 padding); its ``resize`` is
            not read here (see ``resize``).
        coco_gt: ground truth for the COCO metric: a COCO instances JSON (for a COCO dataset, its own file: the
            official numbers, with crowd regions and mask areas) or a ``COCO`` object; None builds it from
            the records (bounding-box areas; difficult boxes as crowd regions).
        output_dir: when given, writes ``predictions.json`` (COCO results, when ``save_json``),
            ``pr_curve.png`` and ``metrics.json`` there.
        augment: test-time augmentation (:mod:`yolo_attn.models.tta`): one view per pair of
            ``augment_scales`` and ``augment_flips``, boxes pooled before NMS; YOLOv5's ``--augment``.

    Returns:
        dict with
        - per metric: ``voc07_map50``, ``voc12_map50``; ``coco_map`` (AP@[.5:.95]), ``coco_map50``,
          ``coco_map75``, ``coco_map_small``/``_medium``/``_large``, ``coco_ar1``/``10``/``100``, ``coco_ar_small``...;
        - ``classes``: one row per class: ``class``, ``images`` and ``ground_truths`` (non-difficult),
          ``detections``, and its AP under each metric (``voc07_ap50``, ``voc12_ap50``, ``coco_ap``, ``coco_ap50``);
        - ``speed``: ms per image for ``preprocess`` (image read + letterbox + to tensor), ``inference``,
          ``postprocess`` (box decoding, NMS, mapping back to the original image) and ``total``;
        - ``images`` (evaluated), ``seconds`` (wall time), ``skipped`` ("path: reason" each), ``image_ids``,
          ``detections`` (per evaluated image a (K, 6) float32 array ``x1, y1, x2, y2, score, label``, original
          image pixels), ``pr_curve`` (VOC AP@0.5 per-class ``recall``/``precision``/``ap``), ``files`` (written).
    """
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metric(s) {sorted(unknown)}; choose from {list(METRICS)}")
    names = list(dataset.names)
    if len(names) != model.num_classes:
        raise ValueError(f"the model predicts {model.num_classes} classes but the dataset has {len(names)} "
                         f"({', '.join(names[:5])}{', ...' if len(names) > 5 else ''}); evaluate with the data "
                         f"config the model was trained on")
    check_input_size(img_size, "img_size")
    views = check_views(augment_scales, augment_flips) if augment else None
    if device is not None:
        model.to(device)
    preprocess = dict(preprocess or {})
    images = _LetterboxedImages(dataset, img_size, _cv2_interpolation(preprocess.get("interpolation", "linear")),
                                int(preprocess.get("pad_value", PAD_VALUE)), check_resize(resize))
    wall = time.perf_counter()
    was_training = model.training
    try:
        model.eval()
        gts, detections, skipped, seconds = _predict(
            model, images, batch_size, workers, amp_dtype, scale_x_y, views,
            dict(conf_threshold=conf_threshold, iou_threshold=iou_threshold, max_det=max_det,
                 multi_label=True, max_candidates=max_candidates, nms=nms), verbose)
    finally:
        model.train(was_training)
    if skipped and verbose:
        print(f"skipped {len(skipped)} of {len(dataset)} images that could not be loaded:", file=sys.stderr)
        for message in skipped[:20]:
            print(f"  {message}", file=sys.stderr)
    if skipped and not gts:  # a score of nothing would read as a model that finds nothing
        raise ValueError(f"none of the {len(dataset)} images could be loaded, so there is nothing to score (the "
                         f"first: {skipped[0]}); see `python tools/check_data.py`")

    cat_ids = _category_ids(getattr(dataset, "category_ids", None), len(names))
    repeated = _first_repeated([g.image_id for g in gts])
    if coco_gt is None and repeated is not None:
        # Combined folders or exports that number their images alike: one id would merge two images in the
        # COCO ground truth (a false positive on one matching the other's object). Positions keep them apart.
        print(f"warning: image ids repeat in this split (e.g. {repeated!r}); COCO scoring and predictions.json "
              f"use the images' positions 0..{len(gts) - 1} instead", file=sys.stderr)
        gts = [replace(g, image_id=k) for k, g in enumerate(gts)]
    want_json = "coco" in metrics or (output_dir is not None and save_json)
    results_json = coco_results([g.image_id for g in gts], detections, cat_ids) if want_json else []
    if "coco" in metrics and coco_gt is not None and not isinstance(coco_gt, COCO):
        coco_gt = load_coco_ground_truth(coco_gt)
    result = _score(gts, detections, names, cat_ids, results_json, metrics, coco_gt,
                    max(CONFUSION_CONF, conf_threshold))
    n = max(len(gts), 1)
    speed = {k: 1000.0 * v / n for k, v in seconds.items()}
    speed["total"] = sum(speed.values())
    result.update(
        speed=speed,
        seconds=time.perf_counter() - wall,
        images=len(gts),
        skipped=skipped,
        image_ids=[g.image_id for g in gts],
        detections=detections,
        files={},
    )
    if output_dir is not None:
        result["files"] = _write_outputs(Path(output_dir), result, names, results_json if save_json else None)
    return result


def _predict(
    model: torch.nn.Module, images: _LetterboxedImages, batch_size: int, workers: int,
    amp_dtype: Optional[torch.dtype], scale_x_y: float, views: Optional[List[Tuple[float, bool]]],
    nms: Dict[str, Any], verbose: bool,
) -> Tuple[List[GroundTruth], List[np.ndarray], List[str], Dict[str, float]]:
    """Detections (original image pixels) and ground truth of every image that loads, the load errors of
    the others, and the seconds spent in each stage."""
    device = next(model.parameters()).device
    channels_last = _uses_channels_last(model)
    level_anchors = model.level_anchors()
    loader = DataLoader(images, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=_collate,
                        pin_memory=device.type == "cuda")
    gts: List[GroundTruth] = []
    detections: List[np.ndarray] = []
    skipped: List[str] = []
    seconds = {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}

    def run(x: torch.Tensor) -> Sequence[torch.Tensor]:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            return model(x)

    with torch.inference_mode():
        for batch, good, bad in tqdm(loader, desc="evaluating", unit="batch", disable=not verbose, leave=False):
            skipped.extend(it["error"] for it in bad)
            if batch is None:
                continue
            t0 = time.perf_counter()
            x = batch.to(device, non_blocking=True).float().div_(255.0)
            _sync(device)
            t1 = time.perf_counter()
            if views is None:
                decoded = decode_outputs(run(x), level_anchors, STRIDES, scale_x_y)
            else:  # decoding is part of each view; it costs little next to the forward
                decoded = augmented_decode(run, x, level_anchors, STRIDES, scale_x_y, *zip(*views))
            _sync(device)
            t2 = time.perf_counter()
            kept = postprocess(decoded, **nms, nms_scales=[item["info"].image_relative for item in good])
            for det, item in zip(kept, good):
                det = det.float().cpu().numpy()
                det[:, :4] = unletterbox_boxes(det[:, :4], item["info"])
                detections.append(det)
                gts.append(item["gt"])
            t3 = time.perf_counter()
            seconds["preprocess"] += sum(it["seconds"] for it in good) + (t1 - t0)
            seconds["inference"] += t2 - t1
            seconds["postprocess"] += t3 - t2
    return gts, detections, skipped, seconds


def _category_ids(category_ids: Optional[Sequence[int]], num_classes: int) -> List[int]:
    if category_ids is None:
        return list(range(num_classes))
    category_ids = [int(c) for c in category_ids]
    if len(category_ids) != num_classes:
        raise ValueError(f"dataset.category_ids has {len(category_ids)} entries for {num_classes} classes")
    return category_ids


def _score(
    gts: List[GroundTruth], detections: List[np.ndarray], names: List[str],
    cat_ids: List[int], results_json: List[Dict[str, Any]], metrics: Sequence[str], coco_gt: Optional[COCO],
    confusion_conf: float = CONFUSION_CONF,
) -> Dict[str, Any]:
    num_classes = len(names)
    flat = _flatten(gts, detections)
    result: Dict[str, Any] = {}
    per_class: Dict[str, List[float]] = {}
    curves = None
    for metric, use_07 in (("voc07", True), ("voc12", False)):
        if metric in metrics:
            voc = _voc(flat, num_classes, use_07)
            result[f"{metric}_map50"] = voc["map"]
            per_class[f"{metric}_ap50"] = voc["ap"]
            curves = voc  # the curve is the same for both; voc12 (the last) labels it with its area AP
    if curves is None:  # the PR curve is always drawn; VOC scoring costs little next to inference
        curves = _voc(flat, num_classes, use_07_metric=False)
    if "coco" in metrics:
        if coco_gt is None:
            coco_gt = coco_ground_truth(gts, cat_ids, names)
        coco = evaluate_coco(coco_gt, results_json, image_ids=[g.image_id for g in gts], category_ids=cat_ids)
        result.update({f"coco_{k}": v for k, v in coco.items() if k not in ("stats", "category_ids", "ap", "ap50")})
        by_category = {cid: k for k, cid in enumerate(coco["category_ids"])}
        per_class["coco_ap"] = [coco["ap"][by_category[c]] for c in cat_ids]
        per_class["coco_ap50"] = [coco["ap50"][by_category[c]] for c in cat_ids]

    point = best_f1_point(curves["recall"], curves["precision"], curves["scores"], curves["num_gt"])
    if point is not None:  # precision and recall at the confidence of the best mean F1 (Ultralytics' P and R)
        per_class["precision"], per_class["recall"] = point["precision"], point["recall"]
        result.update(precision=point["mean_precision"], recall=point["mean_recall"], f1=point["mean_f1"],
                      f1_conf=point["conf"])
    # at YOLOv5's 0.25, or the evaluation's own cut when that is higher (nothing lower is left to count)
    matrix = confusion_matrix([g.boxes for g in gts], [g.labels for g in gts], [g.difficult for g in gts],
                              detections, num_classes, conf=confusion_conf)
    result["confusion_matrix"] = {"conf": confusion_conf, "iou": CONFUSION_IOU, "matrix": matrix.tolist()}

    hard = flat["gt_difficult"]
    images_with = [len(set(flat["gt_image"][(flat["gt_class"] == c) & ~hard].tolist())) for c in range(num_classes)]
    result["classes"] = [
        {"class": name, "images": images_with[c], "ground_truths": curves["num_gt"][c],
         "detections": curves["num_det"][c], **{k: v[c] for k, v in per_class.items()}}
        for c, name in enumerate(names)
    ]
    result["pr_curve"] = {"metric": "voc07" if curves["use_07_metric"] else "voc12",
                          "recall": curves["recall"], "precision": curves["precision"], "ap": curves["ap"]}
    return result


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _write_outputs(
    out: Path, result: Dict[str, Any], names: List[str], results_json: Optional[List[Dict[str, Any]]]
) -> Dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    if results_json is not None:
        files["predictions"] = str(out / "predictions.json")
        write_atomic(files["predictions"], json.dumps(results_json))
    curve = result["pr_curve"]
    files["pr_curve"] = str(out / "pr_curve.png")
    plot_pr_curves(curve["recall"], curve["precision"], curve["ap"], names, files["pr_curve"],
                   title=f"Precision-recall, IoU 0.5 ({curve['metric'].upper()} AP)")
    confusion = result["confusion_matrix"]
    files["confusion_matrix"] = str(out / "confusion_matrix.png")
    plot_confusion_matrix(np.asarray(confusion["matrix"]), names, files["confusion_matrix"], confusion["conf"],
                          confusion["iou"])
    summary = {k: v for k, v in result.items() if k not in ("detections", "pr_curve", "image_ids", "files")}
    files["metrics"] = str(out / "metrics.json")
    write_atomic(files["metrics"], json.dumps(_jsonable(summary), indent=2))
    return files
