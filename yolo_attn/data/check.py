"""Dataset health check behind ``tools/check_data.py``: every problem, with its file and reason, counted.

Beyond what the adapters report while reading annotations, the check scans the folders (VOC: annotations
without images and images without annotations; YOLO: label files without images), finds images a split lists
more than once and splits (other than test, which may be unlabelled) with not one box, and decodes every image
(unreadable, truncated, zero-byte, size differing from the annotation). Conversions that are handled
(grayscale, palette, alpha, 16-bit, EXIF rotation) are listed as notes, not problems; so are YOLO images without
a label file, which train as background images.
"""
from __future__ import annotations

import logging
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .config import build_dataset, load_data_config
from .dataset import DetectionDataset
from .records import (
    IMAGE_SUFFIXES, LISTED_TWICE, MISSING_ANNOTATION, MISSING_IMAGE, MISSING_LABEL, MISSING_SIZE, ORPHAN_LABEL,
    BadImageError, DataProblem, ProblemLog, exif_orientation, open_image_header, read_image,
)
from .voc import voc_year_dir
from .yolo_txt import image_label_pairs

__all__ = ["CheckReport", "check_data", "load_check_config"]

CONFIG_ERROR = "split cannot be read"
NO_BOXES = "split without one box"
ALL_DIFFICULT = "split whose every box is difficult"
_BACKGROUND_EXAMPLES = 5  # background images are normal: a few show where labels were looked for
_MODE_NOTES = {"L": "grayscale", "LA": "grayscale with alpha (alpha dropped)", "P": "palette",
               "PA": "palette with alpha (alpha dropped)", "RGBA": "RGBA (alpha dropped)", "CMYK": "CMYK",
               "I;16": "16-bit", "I;16B": "16-bit", "I;16L": "16-bit", "I": "32-bit integer", "F": "float",
               "1": "1-bit"}


@dataclass
class CheckReport:
    """What :func:`check_data` found: problems (each naming its file), notes, and counts per split.
    ``background`` lists YOLO images without a label file: reported, but not problems."""

    problems: ProblemLog = field(default_factory=ProblemLog)
    notes: List[str] = field(default_factory=list)
    background: ProblemLog = field(default_factory=ProblemLog)
    splits: Dict[str, Dict[str, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return len(self.problems) == 0

    def format(self, max_lines: Optional[int] = None) -> str:
        """The full text: problems grouped by kind, notes, then a summary."""
        lines: List[str] = []
        by_kind: Dict[str, List[DataProblem]] = {}
        for p in self.problems.problems:
            by_kind.setdefault(p.kind, []).append(p)
        for kind, items in by_kind.items():
            lines.append(f"{kind} ({len(items)}):")
            shown = items if max_lines is None else items[:max_lines]
            lines += [f"  {p}" for p in shown]
            if len(shown) < len(items):
                lines.append(f"  ... and {len(items) - len(shown)} more")
        if self.background:
            items = self.background.problems
            lines.append(f"{MISSING_LABEL}, not a problem ({len(items)}):")
            shown = items[:_BACKGROUND_EXAMPLES if max_lines is None else max_lines]
            lines += [f"  {p}" for p in shown]
            if len(shown) < len(items):
                lines.append(f"  ... and {len(items) - len(shown)} more (--max-lines N to list more)")
        if self.notes:
            lines.append(f"converted on load, not problems ({len(self.notes)}):")
            shown = self.notes if max_lines is None else self.notes[:max_lines]
            lines += [f"  {n}" for n in shown]
            if len(shown) < len(self.notes):
                lines.append(f"  ... and {len(self.notes) - len(shown)} more")
        lines.append("summary:")
        for split, counts in self.splits.items():
            lines.append(f"  {split}: {counts.get('images', 0)} images, {counts.get('boxes', 0)} boxes"
                         f" ({counts.get('difficult', 0)} difficult), {counts.get('empty', 0)} without objects"
                         + (f" ({counts['unlabelled']} without a label file)" if counts.get("unlabelled") else ""))
        counts = Counter(p.kind for p in self.problems.problems)
        for kind, n in counts.most_common():
            lines.append(f"  {n:6d}  {kind}")
        lines.append(f"  {len(self.problems)} problems" if len(self.problems) else "  no problems found")
        return "\n".join(lines)


def _dedupe(problems: Sequence[DataProblem], seen: set, by_file: bool = False) -> List[DataProblem]:
    """Problems not reported yet; ``by_file``: one per (kind, file) (a folder scan re-finding what a split
    reported in other words)."""
    out = []
    for p in problems:
        if (p.kind, p.path, p.message) in seen or (by_file and (p.kind, p.path) in seen):
            continue
        seen.update({(p.kind, p.path, p.message), (p.kind, p.path)})
        out.append(p)
    return out


def _scan_voc(cfg: Mapping[str, Any], entries: Sequence[str], log: ProblemLog) -> None:
    """Whole-folder pairing of Annotations/*.xml and JPEGImages/* (beyond the listed image sets)."""
    folders = {voc_year_dir(cfg["root"], str(e).strip("/").rpartition("/")[0]) for e in entries}
    for year_dir in sorted(folders):
        ann_dir, img_dir = year_dir / "Annotations", year_dir / "JPEGImages"
        xmls = set()
        if ann_dir.is_dir():
            xmls = {os.path.splitext(n)[0] for n in os.listdir(ann_dir) if n.endswith(".xml")}
        images = {}
        if img_dir.is_dir():
            for n in os.listdir(img_dir):
                if os.path.splitext(n)[1].lower() in IMAGE_SUFFIXES:
                    images[os.path.splitext(n)[0]] = n
        for stem in sorted(xmls - set(images)):
            log.add(MISSING_IMAGE, ann_dir / f"{stem}.xml", f"no image {stem}.jpg in {img_dir}")
        for stem in sorted(set(images) - xmls):
            log.add(MISSING_ANNOTATION, img_dir / images[stem], f"no annotation {ann_dir / (stem + '.xml')}")


def _scan_yolo(cfg: Mapping[str, Any], entries: Sequence[str], log: ProblemLog) -> None:
    """Label files with no image next to them."""
    lists = {Path(cfg["root"]) / e for key in ("train", "val", "test") for e in (cfg.get(key) or [])}
    rule = cfg.get("labels", "ultralytics")
    for entry in entries:
        try:
            pairs = image_label_pairs(cfg["root"], entry, rule)
        except (FileNotFoundError, ValueError):  # reported with the split
            continue
        wanted = {label for _, label in pairs}
        if rule == "darknet":
            # Darknet's lists pick images out of folders shared by every split (and by images in none): a label
            # is an orphan when no image in those folders has it, not when no image of this split does. The rule
            # rewrites whole folders, so an image's neighbours have their labels where its label is.
            folders = {(image.parent, label.parent) for image, label in pairs if image.parent.is_dir()}
            wanted |= {labels / q.with_suffix(".txt").name for images, labels in folders for q in images.iterdir()
                       if q.suffix.lower() in IMAGE_SUFFIXES}
        for folder in sorted({label.parent for label in wanted}):
            for label in sorted(folder.glob("*.txt")):
                # LabelImg's YOLO export writes its class list there as classes.txt
                if label not in wanted and label.name != "classes.txt" and label not in lists:
                    log.add(ORPHAN_LABEL, label, "no image with this name in the matching images folder")


def _unlabelled(cfg: Mapping[str, Any], split: str, ds: DetectionDataset) -> List[Tuple[str, Path]]:
    """(image, where its label file was looked for) of each YOLO image of a split that has no label file, by the
    config's label rule (background images, to the adapter)."""
    labels: Dict[str, Path] = {}
    for entry in cfg.get(split) or []:
        try:
            pairs = image_label_pairs(cfg["root"], entry, cfg.get("labels", "ultralytics"))
        except (FileNotFoundError, ValueError):  # reported with the split
            continue
        labels.update((str(image), label) for image, label in pairs)
    return [(r.path, labels[r.path]) for r in ds.records if r.path in labels and not labels[r.path].is_file()]


def _listed_twice(split: str, entries: Sequence[Any], ds: DetectionDataset, log: ProblemLog) -> None:
    """Report images a split lists more than once (a VOC id, a YOLO list's line or folder given twice).

    Reported only: loading keeps every listing, as evaluation scores images whose ids repeat by position."""
    counts = Counter(os.path.normpath(r.path) for r in ds.records)
    for path, n in counts.items():
        if n > 1:
            log.add(LISTED_TWICE, path, f"listed {n} times in the {split} split ({', '.join(map(str, entries))});"
                    f" each listing is loaded, so it counts {n} times in training and in scores: remove the repeats")


def _no_boxes(cfg: Mapping[str, Any], split: str, ds: DetectionDataset,
              unlabelled: Sequence[Tuple[str, Path]]) -> str:
    """Why a split with images has not one box, for the :data:`NO_BOXES` problem."""
    if unlabelled:
        why = f"{len(unlabelled)} have no label file (the first looked for at {unlabelled[0][1]})"
        if len(unlabelled) < len(ds):
            why += ", the others' label files hold no usable line"
    elif cfg["format"] == "yolo":
        why = "every label file is empty or holds no usable line"
    else:
        why = "no annotation holds a usable object"
    if len(ds.problems):
        why += " (see the problems above)"
    consequence = {"train": "; training refuses it", "val": "; there is nothing to score"}.get(split, "")
    return f"split {split}: {len(ds)} images and not one box: {why}{consequence}"


def _all_difficult(cfg: Mapping[str, Any], split: str, ds: DetectionDataset) -> str:
    """For the :data:`ALL_DIFFICULT` problem: a split whose every box is ``difficult`` (COCO: a crowd region),
    which training leaves out of its targets and scoring ignores."""
    boxes = sum(len(r.labels) for r in ds.records)
    if cfg["format"] == "coco":
        what = "a crowd region (iscrowd 1)"
        consequence = ("crowd regions are never training targets: training refuses it" if split == "train" else
                       "pycocotools ignores crowd regions: there is nothing to score")
    elif split == "train":
        what, consequence = "difficult", "training leaves difficult boxes out and refuses it: set " \
                                         "`train_difficult: true` in the data config to train on them"
    else:
        what, consequence = "difficult", "the VOC devkit's mAP ignores difficult boxes: there is nothing to score"
    return f"split {split}: {len(ds)} images and {boxes} boxes, every one {what}; {consequence}"


def _inspect(record) -> Tuple[Optional[DataProblem], Optional[str]]:
    """Decode one image: (problem or None, note or None)."""
    path = record.path
    try:
        image = read_image(path)
    except BadImageError as e:
        return DataProblem(e.kind, path, e.reason), None
    note, turned = None, False
    h, w = image.shape[:2]
    try:
        with open_image_header(path) as im:  # the orientation read_image applied, without a second decode
            what = _MODE_NOTES.get(im.mode)
            rotated = exif_orientation(im, path) != 1
        # annotated as the pixels are stored (DetectionDataset.load_record reads it so)
        turned = rotated and (h, w) == (record.width, record.height) and h != w
        exif = "EXIF orientation ignored, as the annotated size says" if turned else "EXIF orientation applied"
        parts = ([f"{what} converted to RGB"] if what else []) + ([exif] if rotated else [])
        note = f"{path}: " + "; ".join(parts) if parts else None
    except Exception:  # noqa: BLE001 - the decode above worked; the note is a nicety
        pass
    if (h, w) != (record.height, record.width) and not turned:
        return DataProblem(MISSING_SIZE, path, f"annotated as {record.width}x{record.height} but the image is"
                                               f" {w}x{h}; boxes are clipped to the image"), note
    return None, note


class _Quiet:
    """Silence the data logger's warnings inside a ``with`` block."""

    def __enter__(self) -> None:
        self.logger = logging.getLogger("yolo_attn.data")
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)

    def __exit__(self, *exc) -> None:
        self.logger.setLevel(self.level)


def load_check_config(source: Any = None, root: Optional[str] = None,
                      splits: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """:func:`~yolo_attn.data.config.load_data_config` for a check of ``splits`` (default: all): a train or val
    split that is not checked may be missing from the config (``--split train`` on a config without ``val:``)."""
    overrides: Dict[str, Any] = {"root": root} if root else {}
    overrides.update({key: [] for key in ("train", "val") if splits and key not in splits})  # left out
    return load_data_config(source, overrides or None)


def check_data(cfg: Mapping[str, Any], splits: Optional[Sequence[str]] = None, decode: bool = True,
               workers: int = 2, progress: bool = True) -> CheckReport:
    """Check the splits of a loaded data config (default: train, val and test when present)."""
    from tqdm import tqdm

    report = CheckReport()
    seen: set = set()
    splits = list(splits or [s for s in ("train", "val", "test") if cfg.get(s)])
    datasets: List[DetectionDataset] = []
    quiet = _Quiet()  # the report lists everything; the adapters' own warning summaries would repeat it
    for split in splits:
        try:
            with quiet:
                ds = build_dataset(cfg, split)
        except (FileNotFoundError, ValueError, KeyError) as e:
            report.problems.add(CONFIG_ERROR, cfg.get("path", "data config"), f"split {split!r}: {e}")
            continue
        datasets.append(ds)
        report.problems.extend(_dedupe(ds.problems.problems, seen))
        counts = report.splits[split] = {
            "images": len(ds), "boxes": sum(len(r.labels) for r in ds.records),
            "difficult": sum(int(r.difficult.sum()) for r in ds.records),
            "empty": sum(len(r.labels) == 0 for r in ds.records)}
        unlabelled = _unlabelled(cfg, split, ds) if cfg["format"] == "yolo" else []
        counts["unlabelled"] = len(unlabelled)
        background = ProblemLog()
        for image, label in unlabelled:
            background.add(MISSING_LABEL, image, f"no label file at {label}; trained on as an image without objects")
        report.background.extend(_dedupe(background.problems, seen))
        if cfg["format"] in ("voc", "yolo"):  # COCO's repeated images are reported by its adapter
            listed = ProblemLog()
            _listed_twice(split, cfg[split], ds, listed)
            report.problems.extend(_dedupe(listed.problems, seen))
        if len(ds) and not counts["boxes"] and split != "test":  # a test split may be unlabelled
            report.problems.add(NO_BOXES, cfg.get("path", "data config"), _no_boxes(cfg, split, ds, unlabelled))
        elif counts["boxes"] and counts["difficult"] == counts["boxes"] and split != "test" \
                and not (split == "train" and ds.include_difficult):
            report.problems.add(ALL_DIFFICULT, cfg.get("path", "data config"), _all_difficult(cfg, split, ds))
    entries = [e for s in splits for e in (cfg.get(s) or [])]
    scan = ProblemLog()
    if cfg["format"] == "voc":
        _scan_voc(cfg, entries, scan)
    elif cfg["format"] == "yolo":
        _scan_yolo(cfg, entries, scan)
    report.problems.extend(_dedupe(scan.problems, seen, by_file=True))
    if decode:
        unique = {}
        for ds in datasets:
            for r in ds.records:
                unique.setdefault(r.path, r)
        with ThreadPoolExecutor(max(1, workers)) as pool:
            results = tqdm(pool.map(_inspect, unique.values()), total=len(unique), desc="decoding images",
                           disable=not progress, leave=False)
            for problem, note in results:
                if problem is not None:
                    report.problems.extend(_dedupe([problem], seen))
                if note is not None:
                    report.notes.append(note)
    return report
