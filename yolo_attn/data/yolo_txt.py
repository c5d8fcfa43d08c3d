"""YOLO txt adapter (Ultralytics layout) onto :class:`Record`.

An entry is an image folder (searched recursively) or a file listing image paths (``train.txt``), relative to
the dataset root. Each image's label file sits at the same path with the last ``images`` folder replaced by
``labels`` and the suffix by ``.txt`` (``images/train/a.jpg`` -> ``labels/train/a.txt``), or with ``labels:
darknet`` where Darknet looks for it (:func:`~yolo_attn.data.darknet.darknet_label_path`); one line per box,
``class cx cy w h``, the last four normalized to [0, 1] by the image width and height. An image without a
label file, or with an empty one, is a background image. Labels are ``class``; ``category_ids`` is
``label + 1``. Image sizes come from file headers (no decode), with EXIF orientation applied.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .darknet import darknet_label_path
from .dataset import DetectionDataset
from .records import (
    BAD_LINE, IMAGE_SUFFIXES, NOT_NORMALIZED, SHARED_LABEL, UNKNOWN_CLASS, BadImageError, ProblemLog, Record,
    clean_boxes, image_header,
)

__all__ = ["LABEL_RULES", "YOLOTxtDataset", "image_label_pairs", "label_path_for", "list_images", "read_list_file"]


def label_path_for(image_path: Union[str, os.PathLike]) -> Path:
    """The label file of an image: last ``images`` folder -> ``labels``, suffix -> ``.txt``."""
    parts = list(Path(image_path).parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


LABEL_RULES = {"ultralytics": label_path_for, "darknet": darknet_label_path}  # a config's `labels:` key


def list_images(root: Union[str, os.PathLike], entry: str) -> List[Path]:
    """Image paths of one entry: a folder (recursive, sorted) or a list file (one path a line, relative to
    ``root``; any name but an image's: Darknet's are train.txt, train.list, ...)."""
    return [image for image, _ in _entry_images(root, entry)]


def image_label_pairs(root: Union[str, os.PathLike], entry: str,
                      labels: str = "ultralytics") -> List[Tuple[Path, Path]]:
    """Each image of an entry with its label file, by the ``labels`` rule (:data:`LABEL_RULES`). Darknet's rule
    rewrites a list's line as written, as Darknet does (a relative ``JPEGImages/a.jpg`` has no ``/JPEGImages/``
    to rewrite), the result taken from ``root`` as the image is."""
    rule = LABEL_RULES[labels]
    return [(image, Path(root) / rule(line) if labels == "darknet" and line is not None else rule(image))
            for image, line in _entry_images(root, entry)]


def _entry_images(root: Union[str, os.PathLike], entry: str) -> List[Tuple[Path, Optional[str]]]:
    """(image path, the list's line or None for a folder's image) of one entry."""
    path = Path(root) / entry
    if path.is_dir():
        return [(p, None) for p in sorted(path.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
    if path.is_file() and path.suffix.lower() not in IMAGE_SUFFIXES:
        return [(Path(ln) if os.path.isabs(ln) else Path(root) / ln, ln) for ln in read_list_file(path, entry)]
    raise FileNotFoundError(f"{path}: no such image folder or list file (data config entry {entry!r})")


def read_list_file(path: Path, entry: Optional[str] = None) -> List[str]:
    """The image paths a list file holds, one a line, blank lines left out (``entry``: as a data config names
    it, for the message)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        where = f"; data config entry {entry!r}" if entry is not None else ""
        raise ValueError(f"{path}: not a list of image paths (not UTF-8 text, byte {e.start}{where})") from None
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def parse_label_file(label_path: Path, names: Sequence[str], height: int, width: int,
                     log: ProblemLog) -> tuple:
    """Boxes (absolute xyxy, unclipped) and labels of one label file; bad lines are reported and skipped. A
    segmentation line (``class x1 y1 x2 y2 x3 y3 ...``, Ultralytics' -seg datasets) is its polygon's box, as
    Ultralytics trains detection on them."""
    boxes, labels = [], []
    # utf-8-sig: a byte-order mark (Windows editors write one) would otherwise spoil the first line
    text = label_path.read_text(encoding="utf-8-sig", errors="replace")
    for n, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"line {n} {line.strip()!r}"
        polygon = len(fields) >= 7 and len(fields) % 2 == 1
        if len(fields) != 5 and not polygon:
            log.add(BAD_LINE, label_path, f"{where}: {len(fields)} fields, expected 5 (class cx cy w h) or a "
                    f"polygon (class x1 y1 x2 y2 x3 y3 ...); skipped")
            continue
        try:
            cls_f = float(fields[0])
            values = [float(v) for v in fields[1:]]
        except ValueError:
            log.add(BAD_LINE, label_path, f"{where}: not numbers; skipped")
            continue
        if polygon:
            xs, ys = np.array(values[0::2]), np.array(values[1::2])  # NaN anywhere stays NaN (checked below)
            values = [(xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2, xs.max() - xs.min(), ys.max() - ys.min()]
        cx, cy, w, h = values
        if not math.isfinite(cls_f) or cls_f != int(cls_f) or not 0 <= int(cls_f) < len(names):
            log.add(UNKNOWN_CLASS, label_path, f"{where}: class {fields[0]} is not an index of the {len(names)}"
                    " names; skipped")
            continue
        values = np.array([cx, cy, w, h])
        if not np.all(np.isfinite(values)):  # not "outside [0, 1]": NaN compares false with every bound
            bad = ", ".join(sorted({str(v) for v in values if not math.isfinite(v)}))
            log.add(NOT_NORMALIZED, label_path, f"{where}: non-finite value ({bad}); skipped")
            continue
        if values.min() < 0 or values.max() > 1:
            log.add(NOT_NORMALIZED, label_path, f"{where}: values outside [0, 1] (pixel coordinates? YOLO txt"
                    " wants cx cy w h divided by the image width and height); skipped")
            continue
        boxes.append(((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height))
        labels.append(int(cls_f))
    return np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64)


class YOLOTxtDataset(DetectionDataset):
    """YOLO txt data (see the module docstring for the layout)."""

    format = "yolo"

    def __init__(self, root: Union[str, os.PathLike], entries: Sequence[str], names: Sequence[str],
                 labels: str = "ultralytics"):
        log = ProblemLog()
        records: List[Record] = []
        labelled: Dict[Path, Path] = {}  # label file -> the first image it labels
        for entry in entries:
            for image_path, label_path in image_label_pairs(root, entry, labels):
                try:
                    h, w, _ = image_header(image_path)
                except BadImageError as e:
                    log.add(e.kind, image_path, f"{e.reason}; skipped")
                    continue
                first = labelled.setdefault(label_path, image_path)
                if first != image_path and label_path.is_file():  # a.jpg and a.png: one a.txt (as Ultralytics)
                    log.add(SHARED_LABEL, label_path, f"the label file of {first.name} and of {image_path.name}; "
                                                      "both take its boxes (rename one image and its label)")
                if label_path.is_file():
                    boxes, classes = parse_label_file(label_path, names, h, w, log)
                else:
                    boxes, classes = np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
                boxes, classes, difficult = clean_boxes(boxes, classes, np.zeros(len(classes), bool), h, w,
                                                        str(label_path), log, names)
                image_id = os.path.relpath(image_path.with_suffix(""), root)
                records.append(Record(None, boxes, classes, difficult, image_id, str(image_path), h, w))
        super().__init__(records, names, problems=log, description=f"YOLO {root} {list(entries)}")
        log.warn(f"YOLO {list(entries)}")
