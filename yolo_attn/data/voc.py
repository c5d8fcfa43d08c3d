"""Pascal VOC adapter: VOCdevkit folders (``VOC2007/``, ``VOC2012/``, ...) onto :class:`Record`.

Layout, per year folder: ``Annotations/<id>.xml``, ``JPEGImages/<id>.jpg``, ``ImageSets/Main/<set>.txt``.
Several folder/set pairs combine into one dataset (``["VOC2007/trainval", "VOC2012/trainval"]``).

Coordinates: VOC's ``xmin..xmax`` and ``ymin..ymax`` are 1-based pixel indices, both ends inclusive. They
become 0-based continuous coordinates as ``x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax`` (the same
width, ``xmax - xmin + 1``). The inverse, for writing VOC files or the devkit's own evaluation, is
``xmin = x1 + 1, ymin = y1 + 1, xmax = x2, ymax = y2``.

``<difficult>1`` objects are kept with ``difficult=True`` (evaluation ignores them; training leaves them out
unless asked to keep them); a missing ``<difficult>`` counts as 0 and is reported.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .dataset import DetectionDataset
from .records import (
    BAD_BOX, IMAGE_SUFFIXES, MISSING_ANNOTATION, MISSING_DIFFICULT, MISSING_IMAGE, MISSING_SIZE, UNKNOWN_CLASS,
    XML_ERROR, BadImageError, ProblemLog, Record, clean_boxes, closest_name, image_header, size_or_zero,
)

__all__ = ["VOC_CLASSES", "VOCDataset", "parse_voc_xml", "voc_year_dir"]

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


def voc_year_dir(root: Union[str, os.PathLike], folder: str) -> Path:
    """``root/folder``, also accepting ``2007`` for ``VOC2007``."""
    path = Path(root) / folder
    if not path.is_dir() and (Path(root) / f"VOC{folder}").is_dir():
        path = Path(root) / f"VOC{folder}"
    return path


def _number(node: Optional[ET.Element]) -> Optional[float]:
    if node is None or node.text is None:
        return None
    try:
        return float(node.text.strip())
    except ValueError:
        return None


def parse_voc_xml(
    xml_path: Union[str, os.PathLike], names: Sequence[str], log: ProblemLog
) -> Optional[Tuple[int, int, np.ndarray, np.ndarray, np.ndarray]]:
    """Parse one annotation into ``(height, width, boxes, labels, difficult)`` (boxes unclipped, 0-based
    continuous), reporting every problem into ``log``; None when the file cannot be parsed at all.
    A missing, zero or unusable (not finite, negative) ``<size>`` gives 0: the caller reads the size from the
    image header."""
    try:
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError) as e:
        log.add(XML_ERROR, xml_path, f"cannot parse the XML ({e}); image skipped")
        return None
    index = {n: i for i, n in enumerate(names)}
    size = root.find("size")
    width = _number(size.find("width")) if size is not None else None
    height = _number(size.find("height")) if size is not None else None
    boxes, labels, difficult = [], [], []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()  # editors leave newlines and indentation around it
        if name not in index:
            log.add(UNKNOWN_CLASS, xml_path, f"unknown class {name!r}{closest_name(name, names)}; box dropped"
                    " (the class list is the config's `names`)")
            continue
        bb = obj.find("bndbox")
        coords = [_number(bb.find(k)) if bb is not None else None for k in ("xmin", "ymin", "xmax", "ymax")]
        if any(c is None for c in coords):
            log.add(BAD_BOX, xml_path, f"{name} object has a missing or non-numeric <bndbox>; dropped")
            continue
        xmin, ymin, xmax, ymax = coords
        flag = obj.find("difficult")
        if flag is None or flag.text is None or not flag.text.strip():
            log.add(MISSING_DIFFICULT, xml_path, f"{name} object has no <difficult> tag; taken as 0")
            is_difficult = False
        else:  # numerically, so that 0.0 (written by some converters) is not difficult
            value = _number(flag)
            is_difficult = value != 0 if value is not None else flag.text.strip().lower() != "false"
        boxes.append((xmin - 1.0, ymin - 1.0, xmax, ymax))  # 1-based inclusive -> 0-based continuous
        labels.append(index[name])
        difficult.append(is_difficult)
    h, w = size_or_zero(height), size_or_zero(width)
    return h, w, np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64), np.array(difficult, bool)


def _image_files(folder: Path) -> Dict[str, str]:
    """Image stem -> file name in ``folder`` (one directory listing instead of a stat per image)."""
    files: Dict[str, str] = {}
    if folder.is_dir():
        for entry in os.scandir(folder):
            stem, suffix = os.path.splitext(entry.name)
            if suffix.lower() in IMAGE_SUFFIXES and (stem not in files or suffix.lower() == ".jpg"):
                files[stem] = entry.name
    return files


class VOCDataset(DetectionDataset):
    """VOCdevkit sets as one dataset (see the module docstring for coordinates and ``difficult``).

    Args:
        root: the VOCdevkit folder.
        image_sets: ``"VOC2007/trainval"``-style entries: year folder, then an ``ImageSets/Main`` set name.
        names: class names; XML names must match exactly (unknown names are reported with the closest).
    """

    format = "voc"

    def __init__(self, root: Union[str, os.PathLike], image_sets: Sequence[str], names: Sequence[str] = VOC_CLASSES,
                 as_annotated: bool = False):
        log = ProblemLog()
        records: List[Record] = []
        for entry in image_sets:
            folder, _, set_name = str(entry).strip("/").rpartition("/")
            year_dir = voc_year_dir(root, folder)
            set_file = year_dir / "ImageSets" / "Main" / f"{set_name}.txt"
            if not set_file.is_file():
                raise FileNotFoundError(f"{set_file}: no such image set (data config entry {entry!r}); expected "
                                        "<root>/<year folder>/ImageSets/Main/<set>.txt")
            try:
                text = set_file.read_text(encoding="utf-8-sig")
            except UnicodeDecodeError as e:
                raise ValueError(f"{set_file}: not a list of image ids (not UTF-8 text, byte {e.start}; data config "
                                 f"entry {entry!r})") from None
            ids = [line.split()[0] for line in text.splitlines() if line.strip()]
            images = _image_files(year_dir / "JPEGImages")
            for image_id in ids:
                records.extend(self._parse_one(year_dir, image_id, images, names, log, as_annotated))
        super().__init__(records, names, problems=log, description=f"VOC {root} {list(image_sets)}")
        log.warn(f"VOC {list(image_sets)}")

    @staticmethod
    def _parse_one(year_dir: Path, image_id: str, images: Dict[str, str], names: Sequence[str],
                   log: ProblemLog, as_annotated: bool = False) -> List[Record]:
        xml_path = year_dir / "Annotations" / f"{image_id}.xml"
        has_xml = xml_path.is_file()
        if image_id not in images:
            if has_xml:
                log.add(MISSING_IMAGE, xml_path, f"no image {image_id}.jpg in {year_dir / 'JPEGImages'}; skipped")
            else:
                log.add(MISSING_IMAGE, year_dir / "ImageSets", f"{image_id} is listed but has neither image"
                        " nor annotation; skipped")
            return []
        image_path = year_dir / "JPEGImages" / images[image_id]
        if not has_xml:
            log.add(MISSING_ANNOTATION, image_path, f"no annotation {xml_path}; skipped (an image without"
                    " annotation is not known to be empty)")
            return []
        parsed = parse_voc_xml(xml_path, names, log)
        if parsed is None:
            return []
        h, w, boxes, labels, difficult = parsed
        if h == 0 or w == 0:
            try:
                h, w, _ = image_header(image_path)
            except BadImageError as e:
                log.add(e.kind, image_path, f"{e.reason}; skipped")
                return []
            log.add(MISSING_SIZE, xml_path, f"missing, zero or invalid <size>; read {w}x{h} from the image")
        boxes, labels, difficult = clean_boxes(boxes, labels, difficult, h, w, str(xml_path), log, names,
                                               as_annotated)
        return [Record(None, boxes, labels, difficult, image_id, str(image_path), h, w)]
