"""The dataset base every adapter shares: annotations parsed once at construction, images decoded on demand."""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
from torch.utils.data import Dataset

from .records import ProblemLog, Record, read_image

__all__ = ["DetectionDataset"]


class DetectionDataset(Dataset):
    """A list of annotation-only :class:`Record` objects plus the image decode.

    Attributes:
        names: class names; a record's label ``k`` is ``names[k]``.
        category_ids: original id of each contiguous label (COCO category id; ``label + 1`` otherwise).
        problems: :class:`ProblemLog` of what was wrong in the annotations (each naming its file).
    ``ds[i]`` is ``ds.load_record(i)``.
    """

    format = "base"

    def __init__(self, records: Sequence[Record], names: Sequence[str], category_ids: Optional[Sequence[int]] = None,
                 problems: Optional[ProblemLog] = None, description: str = ""):
        self.records: List[Record] = list(records)
        self.names: List[str] = list(names)
        self.category_ids: List[int] = list(category_ids) if category_ids is not None else \
            list(range(1, len(self.names) + 1))
        self.problems = problems if problems is not None else ProblemLog()
        self.description = description or self.format

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Record:
        return self.load_record(index)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.description!r}, {len(self)} images, {len(self.names)} classes, "
                f"{len(self.problems)} problems)")

    def get_annotation(self, index: int) -> Record:
        """The annotation of sample ``index`` with ``image=None``; no image is decoded (a copy: free to modify)."""
        return self.records[index].copy()

    def load_record(self, index: int) -> Record:
        """The sample with its image (H, W, 3) uint8 RGB.

        Raises :class:`~yolo_attn.data.records.BadImageError` (file and reason) for a bad image. An image whose
        EXIF orientation turns it against the annotated size (a VOC ``<size>``, a COCO width and height) was
        annotated as its pixels are stored (LabelImg and Darknet ignore EXIF): it is read that way, or its
        boxes would fall outside it. Otherwise, when the decoded size differs from the annotated one, boxes
        are clipped to the decoded image."""
        ann = self.records[index]
        image = read_image(ann.path)
        h, w = image.shape[:2]
        if (h, w) == (ann.width, ann.height) and h != w:
            stored = read_image(ann.path, orientation=False)
            if stored.shape[:2] == (ann.height, ann.width):
                image, (h, w) = stored, stored.shape[:2]
        record = ann.copy(image)
        if (h, w) != (ann.height, ann.width):
            record.height, record.width = h, w
            record.boxes[:, [0, 2]] = record.boxes[:, [0, 2]].clip(0, w)
            record.boxes[:, [1, 3]] = record.boxes[:, [1, 3]].clip(0, h)
            ok = (record.boxes[:, 2] > record.boxes[:, 0]) & (record.boxes[:, 3] > record.boxes[:, 1])
            record.boxes, record.labels, record.difficult = record.boxes[ok], record.labels[ok], record.difficult[ok]
        return record

    def image_paths(self) -> List[str]:
        return [r.path for r in self.records]

    def label_counts(self) -> np.ndarray:
        """Boxes per class over the whole split (difficult included)."""
        counts = np.zeros(len(self.names), dtype=np.int64)
        for r in self.records:
            np.add.at(counts, r.labels, 1)
        return counts

    def as_single_class(self, name: str = "item") -> "DetectionDataset":
        """Every box as class 0, ``name`` (Ultralytics' ``single_cls``: one detector of "something there").
        In place; returns the dataset. Score it against its records: a COCO JSON still has its own categories."""
        for r in self.records:
            r.labels = np.zeros_like(r.labels)
        self.names, self.category_ids = [name], [1]
        return self
