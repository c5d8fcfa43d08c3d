"""COCO adapter: an instances JSON plus an image folder onto :class:`Record`.

Category ids (1-based, with gaps: 1..90 for COCO's 80 classes) map to contiguous labels in the order of
the config's ``names`` (or, without names, of the category ids); ``dataset.category_ids[label]`` maps back.
COCO boxes ``[x, y, w, h]`` are already 0-based continuous: ``x1 = x, x2 = x + w``.
``iscrowd`` annotations are kept as difficult boxes: never training targets, and ignored regions in the VOC
metrics, as COCOeval ignores them (COCO evaluation reads them from the JSON itself); images without
annotations stay, as background images. ``image_id`` is COCO's id;
when a split combines several JSONs whose image ids collide (exports that each number from 1), every id
becomes ``"<entry index>:<id>"`` so that images stay apart in evaluation (``dataset.id_prefixes``).
"""
from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .dataset import DetectionDataset
from .records import (
    BAD_BOX, COCO_DUPLICATE_IMAGE_ID, COCO_MISSING_CATEGORY, COCO_MISSING_IMAGE, COCO_SHARED_FILE, MISSING_IMAGE,
    MISSING_SIZE, UNKNOWN_CLASS, BadImageError, ProblemLog, Record, clean_boxes, closest_name, image_header,
    size_or_zero,
)

__all__ = ["COCODataset", "coco_split_paths"]


def coco_split_paths(root: Union[str, os.PathLike], entry: Union[str, dict]) -> Tuple[Path, Path]:
    """(image folder, annotation JSON) for a config entry.

    ``"train2017"`` means ``root/train2017`` (or ``root/images/train2017``) and
    ``root/annotations/instances_train2017.json``; ``{images: ..., annotations: ...}`` names both
    (relative to ``root``)."""
    root = Path(root)
    if isinstance(entry, dict):
        if "images" not in entry or "annotations" not in entry:
            raise ValueError(f"COCO split entry {entry!r} needs both `images` and `annotations`")
        return root / entry["images"], root / entry["annotations"]
    images = root / entry
    if not images.is_dir() and (root / "images" / entry).is_dir():
        images = root / "images" / entry
    return images, root / "annotations" / f"instances_{entry}.json"


class COCODataset(DetectionDataset):
    """COCO-format detection data (see the module docstring for ids and coordinates).

    Args:
        root: dataset folder that config entries are relative to.
        entries: split entries (see :func:`coco_split_paths`).
        names: class names (contiguous label order); None takes the JSON's category names by id.
    """

    format = "coco"

    def __init__(self, root: Union[str, os.PathLike], entries: Sequence[Union[str, dict]],
                 names: Optional[Sequence[str]] = None, as_annotated: bool = False):
        log = ProblemLog()
        records: List[Record] = []
        category_ids: Optional[List[int]] = None
        paths = [coco_split_paths(root, entry) for entry in entries]
        loaded = [self._load_json(ann_file) for _, ann_file in paths]
        seen: set = set()
        collide = False
        for data in loaded:
            ids = {img.get("id") for img in data["images"]}
            collide = collide or not seen.isdisjoint(ids)
            seen |= ids
        self.annotation_files = [ann_file for _, ann_file in paths]
        self.id_prefixes = [f"{k}:" if collide else "" for k in range(len(paths))]
        for (image_dir, ann_file), data, prefix in zip(paths, loaded, self.id_prefixes):
            names, ids = self._categories(data, names, ann_file, log)
            if category_ids is not None and ids != category_ids:
                raise ValueError(f"{ann_file}: category ids differ from the previous split's; cannot combine")
            category_ids = ids
            records.extend(self._records(data, image_dir, ann_file, names, ids, log, prefix, as_annotated))
        super().__init__(records, names or [], category_ids or [], log, description=f"COCO {root} {list(entries)}")
        log.warn(f"COCO {list(entries)}")

    @staticmethod
    def _load_json(ann_file: Path) -> dict:
        if not ann_file.is_file():
            raise FileNotFoundError(f"{ann_file}: no such COCO annotation file")
        try:
            data = json.loads(ann_file.read_text(encoding="utf-8-sig"))  # -sig: Windows tools write a BOM
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{ann_file}: not valid JSON ({e})") from None
        if not isinstance(data, dict) or "images" not in data or "categories" not in data:
            raise ValueError(f"{ann_file}: not a COCO instances file (needs `images` and `categories`)")
        _check_structure(data, ann_file)
        return data

    @staticmethod
    def _categories(data: dict, names: Optional[Sequence[str]], ann_file: Path,
                    log: ProblemLog) -> Tuple[List[str], List[int]]:
        """Contiguous names and the category id of each; categories the names lack are reported."""
        cats = sorted(data["categories"], key=lambda c: c["id"])
        ids_of: Dict[str, List[int]] = defaultdict(list)
        for c in cats:
            ids_of[c["name"]].append(int(c["id"]))
        for name, shared in ids_of.items():
            if len(shared) > 1:  # one would silently take the other's boxes, or the class would appear twice
                raise ValueError(f"{ann_file}: categories {', '.join(map(str, shared))} are all named {name!r}; "
                                 f"give each category its own name, or merge them into one id")
        if names is None:
            return [c["name"] for c in cats], [int(c["id"]) for c in cats]
        by_name = {c["name"]: int(c["id"]) for c in cats}
        ids = []
        for i, name in enumerate(names):
            if name not in by_name:
                raise ValueError(f"{ann_file}: class {name!r} of the config's names is not a category in the"
                                 f" JSON{closest_name(name, list(by_name))}")
            ids.append(by_name[name])
        for c in cats:
            if c["name"] not in names:
                log.add(UNKNOWN_CLASS, ann_file, f"category {c['name']!r} (id {c['id']}) is not in the config's"
                        f" names{closest_name(c['name'], names)}; its boxes are dropped")
        return list(names), ids

    @staticmethod
    def _records(data: dict, image_dir: Path, ann_file: Path, names: Sequence[str], category_ids: Sequence[int],
                 log: ProblemLog, id_prefix: str = "", as_annotated: bool = False) -> List[Record]:
        label_of = {cid: k for k, cid in enumerate(category_ids)}
        known_categories = {int(c["id"]) for c in data["categories"]}
        images = {img["id"]: img for img in data["images"]}
        # An id given to several images: whose boxes its annotations hold cannot be told (pycocotools keeps
        # the last image and gives it them all), so those images are left out, as unreadable ones are.
        counts = Counter(img["id"] for img in data["images"])
        duplicated = {image_id for image_id, count in counts.items() if count > 1}
        for image_id in duplicated:
            # not `names`: that is the class names, which the box messages below still need
            listed = ", ".join(str(img.get("file_name")) for img in data["images"] if img["id"] == image_id)
            log.add(COCO_DUPLICATE_IMAGE_ID, ann_file, f"image id {image_id} is given to {counts[image_id]} "
                    f"images ({listed}); they and their annotations are skipped")
            del images[image_id]
        ids_of_file: Dict[str, List[int]] = defaultdict(list)
        for image_id, img in images.items():
            ids_of_file[str(img.get("file_name"))].append(image_id)
        for file_name, ids in ids_of_file.items():
            if len(ids) > 1:  # pycocotools scores them as separate images: kept, but surely not meant
                log.add(COCO_SHARED_FILE, ann_file, f"{file_name} is the file of image ids "
                        f"{', '.join(map(str, ids))}; each is kept with its own annotations")
        files = set(os.listdir(image_dir)) if image_dir.is_dir() else set()
        per_image: Dict[int, list] = defaultdict(list)
        for ann in data.get("annotations") or []:
            if ann.get("image_id") in duplicated:
                continue
            if ann.get("image_id") not in images:
                log.add(COCO_MISSING_IMAGE, ann_file, f"annotation {ann.get('id')} points to image id"
                        f" {ann.get('image_id')}, which is not in `images`; dropped")
            elif ann.get("category_id") not in known_categories:
                log.add(COCO_MISSING_CATEGORY, ann_file, f"annotation {ann.get('id')} points to category id"
                        f" {ann.get('category_id')!r}, which is not in `categories`; dropped")
            elif ann["category_id"] in label_of:
                per_image[ann["image_id"]].append(ann)
        records = []
        for image_id, img in images.items():
            file_name = img.get("file_name", "")
            path = image_dir / file_name
            # the listing answers for bare names; a name with folders ("train2017/a.jpg") needs its own look
            if not (file_name in files if not os.path.dirname(file_name) else path.is_file()):
                log.add(MISSING_IMAGE, path, f"image id {image_id} in {ann_file.name} has no file; skipped")
                continue
            h, w = size_or_zero(img.get("height")), size_or_zero(img.get("width"))
            if h == 0 or w == 0:
                try:
                    h, w, _ = image_header(path)
                except BadImageError as e:
                    log.add(e.kind, path, f"{e.reason}; skipped")
                    continue
                log.add(MISSING_SIZE, path, f"image id {image_id} has no usable height/width; read {w}x{h}"
                        " from the image")
            boxes, labels, crowd = [], [], []
            for ann in per_image.get(image_id, []):
                bbox = ann.get("bbox")
                try:
                    x, y, bw, bh = (float(v) for v in bbox)
                except (TypeError, ValueError):
                    log.add(BAD_BOX, path, f"annotation {ann.get('id')} has bbox {bbox!r}; dropped")
                    continue
                boxes.append((x, y, x + bw, y + bh))
                labels.append(label_of[ann["category_id"]])
                crowd.append(bool(ann.get("iscrowd")))
            # crowd regions are difficult boxes: never targets, and the VOC metrics ignore detections on them
            # as COCOeval does
            boxes, labels, difficult = clean_boxes(
                np.array(boxes, np.float32), np.array(labels, np.int64), np.array(crowd, bool), h, w,
                f"{path} (in {ann_file.name})", log, names, as_annotated)
            record_id = f"{id_prefix}{image_id}" if id_prefix else image_id
            records.append(Record(None, boxes, labels, difficult, record_id, str(path), h, w))
        return records


def _check_structure(data: dict, ann_file: Path) -> None:
    """What the rest takes for granted, checked once with a message naming the file: lists of objects, an id for
    every image (numbers or text, not both: pycocotools sorts them), an integer id and a name for every
    category. A missing or null ``annotations`` is an unannotated split."""
    annotations = data.get("annotations")
    for key, items in (("images", data["images"]), ("categories", data["categories"]),
                       ("annotations", [] if annotations is None else annotations)):
        if not isinstance(items, list):
            raise ValueError(f"{ann_file}: `{key}` is a {type(items).__name__}, not a list")
        for k, item in enumerate(items):
            if not isinstance(item, dict):
                raise ValueError(f"{ann_file}: `{key}` entry {k} is {item!r}, not an object")
    kinds = {}
    for k, img in enumerate(data["images"]):
        if img.get("id") is None:
            raise ValueError(f"{ann_file}: image {k} ({img.get('file_name', 'no file_name')}) has no `id`")
        kinds.setdefault(isinstance(img["id"], str), img["id"])
    if len(kinds) > 1:
        raise ValueError(f"{ann_file}: image ids mix numbers and text (e.g. {kinds[False]!r} and {kinds[True]!r});"
                         " give every image the same kind of id")
    for c in data["categories"]:
        if isinstance(c.get("id"), bool) or not isinstance(c.get("id"), int):
            raise ValueError(f"{ann_file}: category {c.get('name')!r} has id {c.get('id')!r}; COCO category ids "
                             "are integers")
        if not isinstance(c.get("name"), str):
            raise ValueError(f"{ann_file}: category {c['id']} has no name")
