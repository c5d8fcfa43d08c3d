"""Test doubles for the evaluator: a dataset with the data package's interface, an "oracle" model whose raw
maps decode to exactly the boxes it is given, and a small YOLO-txt dataset on disk."""
from dataclasses import dataclass, replace
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
import torch.nn as nn

from yolo_attn.data.letterbox import letterbox, letterbox_boxes, stretch
from yolo_attn.models import DEFAULT_ANCHOR_MASKS, DEFAULT_ANCHORS

NAMES = ["disc", "block"]  # the classes of write_yolo_dataset


@dataclass
class FakeRecord:
    image: Optional[np.ndarray]
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray
    image_id: Union[str, int]
    path: str
    height: int
    width: int


class FakeDataset:
    """names, len, get_annotation(i), load_record(i), category_ids: the interface the evaluator uses.
    ``bad`` indices raise on load, as a corrupt image file does."""

    def __init__(self, annotations: Sequence[FakeRecord], names: Sequence[str],
                 category_ids: Optional[Sequence[int]] = None, bad: Sequence[int] = ()):
        self.annotations = list(annotations)
        self.names = list(names)
        self.category_ids = list(category_ids) if category_ids is not None else list(range(1, len(names) + 1))
        self.bad = set(bad)

    def __len__(self) -> int:
        return len(self.annotations)

    def get_annotation(self, index: int) -> FakeRecord:
        return replace(self.annotations[index], image=None)

    def load_record(self, index: int) -> FakeRecord:
        ann = self.annotations[index]
        if index in self.bad:
            raise RuntimeError(f"{ann.path}: truncated JPEG (no end-of-image marker)")
        rng = np.random.default_rng(index)
        image = rng.integers(0, 255, size=(ann.height, ann.width, 3), dtype=np.uint8)
        return replace(ann, image=image)


def make_dataset(num_images: int = 6, num_classes: int = 3, seed: int = 0, **kw) -> FakeDataset:
    """Images of varied shapes with 1-3 well-separated boxes each (so no two share a stride-16 cell)."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(num_images):
        h, w = int(rng.integers(60, 130)), int(rng.integers(60, 130))
        boxes = []
        for cx, cy in [(0.25, 0.3), (0.7, 0.7), (0.7, 0.25)][: int(rng.integers(1, 4))]:
            bw, bh = rng.uniform(0.1, 0.3) * w, rng.uniform(0.1, 0.3) * h
            boxes.append([cx * w - bw / 2, cy * h - bh / 2, cx * w + bw / 2, cy * h + bh / 2])
        n = len(boxes)
        records.append(FakeRecord(None, np.array(boxes, np.float32), rng.integers(0, num_classes, n),
                                  np.zeros(n, bool), f"img{i:03d}", f"/fake/img{i:03d}.jpg", h, w))
    return FakeDataset(records, [f"class{c}" for c in range(num_classes)], **kw)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


class OracleModel(nn.Module):
    """Outputs, for the images in dataset order, raw maps that decode to the given boxes (original image
    pixels) with the given scores; everything else scores ~0. Every box goes to the stride-16 head. ``resize``:
    how the evaluator is expected to have fitted the images to the input ("letterbox" or "stretch")."""

    def __init__(self, dataset, img_size: int, boxes: List[Tuple[np.ndarray, np.ndarray, np.ndarray]],
                 scale_x_y: float = 1.05, resize: str = "letterbox"):
        super().__init__()
        self.resize = resize
        self.num_classes = len(dataset.names)
        self.anchors = [tuple(map(float, a)) for a in DEFAULT_ANCHORS]
        self.anchor_masks = DEFAULT_ANCHOR_MASKS
        self.dummy = nn.Parameter(torch.zeros(1))  # the evaluator finds the device from the parameters
        self.outputs = [self._encode(dataset.get_annotation(i), img_size, *pred, scale_x_y)
                        for i, pred in enumerate(boxes)]
        self.calls = 0

    def level_anchors(self):
        return [[self.anchors[i] for i in mask] for mask in self.anchor_masks]

    def _encode(self, ann, img_size, xyxy, labels, scores, s):
        c = self.num_classes
        na = len(self.anchor_masks[1])
        p5 = torch.full((na * (5 + c), img_size // 32, img_size // 32), -20.0)
        p4 = torch.full((na, 5 + c, img_size // 16, img_size // 16), -20.0)
        fit = stretch if self.resize == "stretch" else letterbox
        _, info = fit(np.zeros((ann.height, ann.width, 3), np.uint8), img_size)
        boxed = letterbox_boxes(np.asarray(xyxy, np.float32).reshape(-1, 4), info).astype(np.float64)
        used = set()
        for box, label, score in zip(boxed, labels, scores):
            cx, cy = (box[0] + box[2]) / 2 / 16, (box[1] + box[3]) / 2 / 16
            gx, gy = int(cx), int(cy)
            a = next(a for a in range(na) if (gx, gy, a) not in used)
            used.add((gx, gy, a))
            aw, ah = self.level_anchors()[1][a]
            p4[a, 0, gy, gx] = float(_logit(np.array((cx - gx + 0.5 * (s - 1)) / s)))
            p4[a, 1, gy, gx] = float(_logit(np.array((cy - gy + 0.5 * (s - 1)) / s)))
            p4[a, 2, gy, gx] = float(np.log((box[2] - box[0]) / aw))
            p4[a, 3, gy, gx] = float(np.log((box[3] - box[1]) / ah))
            p4[a, 4, gy, gx] = float(_logit(np.array(score)))
            p4[a, 5 + int(label), gy, gx] = 20.0
        return p5, p4.reshape(na * (5 + c), img_size // 16, img_size // 16)

    def forward(self, x):
        batch = self.outputs[self.calls : self.calls + len(x)]
        self.calls += len(x)
        return tuple(torch.stack([b[k] for b in batch]).to(x.device) for k in range(2))


def perfect_predictions(dataset, score: float = 0.9):
    annotations = [dataset.get_annotation(i) for i in range(len(dataset))]
    return [(a.boxes, a.labels, np.full(len(a.labels), score)) for a in annotations]


def write_yolo_dataset(root: Path, num_images: int = 4, sizes: Optional[Sequence[Tuple[int, int]]] = None) -> Path:
    """A YOLO-txt val split of ``num_images`` images (random sides of 70-110 px, or the (h, w) of ``sizes``)
    with a disc and a block each; returns its data config."""
    rng = np.random.default_rng(0)
    (root / "images" / "val").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    for i in range(len(sizes) if sizes else num_images):
        h, w = sizes[i] if sizes else (int(rng.integers(70, 110)), int(rng.integers(70, 110)))
        image = np.full((h, w, 3), 200, np.uint8)
        cv2.circle(image, (w // 3, h // 3), 12, (0, 0, 255), -1)
        cv2.rectangle(image, (w // 2, h // 2), (w // 2 + 20, h // 2 + 15), (0, 255, 0), -1)
        cv2.imwrite(str(root / "images" / "val" / f"{i}.jpg"), image)
        (root / "labels" / "val" / f"{i}.txt").write_text(
            f"0 {w / 3 / w:.6f} {h / 3 / h:.6f} {24 / w:.6f} {24 / h:.6f}\n"
            f"1 {(w // 2 + 10) / w:.6f} {(h // 2 + 7.5) / h:.6f} {20 / w:.6f} {15 / h:.6f}\n")
    config = root / "data.yaml"
    config.write_text(f"format: yolo\nroot: {root}\ntrain: images/val\nval: images/val\nnames: {NAMES}\n")
    return config
