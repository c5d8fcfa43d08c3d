"""The one internal sample record, image reading that survives real-world files, and problem reports.

Every dataset adapter (VOC, COCO, YOLO txt) turns its files into :class:`Record` objects; everything
downstream (transforms, loaders, evaluation) sees only records. Coordinates are *0-based continuous*
pixel coordinates: the pixel in column ``c`` spans ``[c, c + 1)``, so a box covering columns ``c0..c1``
(inclusive) is ``x1 = c0, x2 = c1 + 1`` and its width is ``x2 - x1``.
"""
from __future__ import annotations

import difflib
import logging
import math
import os
import struct
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

__all__ = [
    "BadImageError",
    "DataProblem",
    "ProblemLog",
    "Record",
    "clean_boxes",
    "closest_name",
    "image_header",
    "read_image",
    "size_or_zero",
    "target_mask",
]

LOGGER = logging.getLogger("yolo_attn.data")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass(eq=False)  # arrays inside: compare records field by field, not with ==
class Record:
    """One sample. ``boxes`` are (N, 4) float32 absolute ``x1 y1 x2 y2`` in 0-based continuous pixels of
    the image as decoded (EXIF orientation applied); ``labels`` (N,) int64 contiguous class indices;
    ``difficult`` (N,) bool. ``image`` is (H, W, 3) uint8 RGB, or None for an annotation-only record."""

    image: Optional[np.ndarray]
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray
    image_id: Union[str, int]
    path: str
    height: int
    width: int

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.difficult = np.asarray(self.difficult, dtype=bool).reshape(-1)

    def copy(self, image: Optional[np.ndarray] = None) -> "Record":
        """A copy whose arrays the caller may modify; ``image`` replaces the image."""
        return Record(image, self.boxes.copy(), self.labels.copy(), self.difficult.copy(),
                      self.image_id, self.path, self.height, self.width)


@dataclass(frozen=True)
class DataProblem:
    """One problem found in a dataset: what kind, in which file, and what was done about it."""

    kind: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


# The kinds every adapter and tools/check_data.py use, so that summaries count alike.
ZERO_BYTE = "zero-byte image"
TRUNCATED = "truncated image"
UNREADABLE = "unreadable image"
MISSING_IMAGE = "annotation without image"
MISSING_ANNOTATION = "image without annotation"
XML_ERROR = "XML parse error"
UNKNOWN_CLASS = "unknown class"
OUT_OF_BOUNDS = "box out of bounds (clipped)"
DEGENERATE = "zero or negative area box (dropped)"
MISSING_DIFFICULT = "missing <difficult> (taken as 0)"
DUPLICATE = "duplicate box (dropped)"
# the same problems in a split that is scored, not trained on: kept as written (see clean_boxes)
OUT_OF_BOUNDS_KEPT = "box out of bounds (scored as annotated)"
DEGENERATE_KEPT = "zero or negative area box (scored as annotated)"
DUPLICATE_KEPT = "duplicate box (scored as annotated)"
BAD_BOX = "unparsable box (dropped)"
MISSING_SIZE = "missing or wrong image size"
COCO_MISSING_IMAGE = "annotation points to a missing image"
COCO_MISSING_CATEGORY = "annotation points to a missing category"
COCO_DUPLICATE_IMAGE_ID = "image id given to several images"
COCO_SHARED_FILE = "image file given several ids"
BAD_LINE = "wrong field count"
NOT_NORMALIZED = "non-normalized values"
ORPHAN_LABEL = "label file without image"
SHARED_LABEL = "label file of several images"
# reported by tools/check_data.py only (loading is unchanged): a YOLO image without a label file is a background
# image, as Ultralytics takes it, so it is a note, not a problem; a repeated listing is loaded once per listing,
# since evaluation scores images whose ids repeat by position
MISSING_LABEL = "image without label file (background)"
LISTED_TWICE = "image listed more than once"


@dataclass
class ProblemLog:
    """Problems collected while a dataset is read; counted by kind, each naming its file."""

    problems: List[DataProblem] = field(default_factory=list)

    def add(self, kind: str, path: Union[str, os.PathLike], message: str) -> None:
        self.problems.append(DataProblem(kind, str(path), message))

    def extend(self, other: Iterable[DataProblem]) -> None:
        self.problems.extend(other)

    def counts(self) -> Dict[str, int]:
        return dict(Counter(p.kind for p in self.problems))

    def summary(self) -> str:
        return ", ".join(f"{n} {kind}" for kind, n in sorted(self.counts().items(), key=lambda kv: -kv[1]))

    def warn(self, what: str, examples: int = 5) -> None:
        """Log a one-line count per kind plus a few examples (the full list: tools/check_data.py)."""
        if not self.problems:
            return
        lines = [f"{what}: {len(self.problems)} data problems ({self.summary()})"]
        lines += [f"  {p}" for p in self.problems[:examples]]
        if len(self.problems) > examples:
            lines.append("  ... run `python tools/check_data.py --data <config>` for all of them")
        LOGGER.warning("\n".join(lines))

    def __len__(self) -> int:
        return len(self.problems)


class BadImageError(RuntimeError):
    """An image file that cannot be used; the message names the file and the reason."""

    def __init__(self, path: Union[str, os.PathLike], reason: str, kind: str = UNREADABLE):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason, self.kind = str(path), reason, kind


def _jpeg_truncated(data: bytes) -> bool:
    """Whether a JPEG lacks its end-of-image marker (FF D9) after the start of its first scan.

    The segments before the scan are skipped by their lengths, so the end marker of an EXIF thumbnail does
    not count. In entropy-coded data 0xFF is always followed by 0x00 or a restart marker, so FF D9 after the
    scan starts can only end the image. Bytes after it (phone trailers, padding) are ignored by decoders."""
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF and data[pos + 1] != 0xDA:
        marker = data[pos + 1]
        if marker == 0xFF or 0xD0 <= marker <= 0xD7 or marker == 0x01:  # fill byte or a marker without length
            pos += 1 if marker == 0xFF else 2
        else:
            pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    return data.find(b"\xff\xd9", pos) == -1


def _png_truncated(data: bytes) -> bool:
    """Whether walking a PNG's chunks (length, type, data, CRC) runs out of bytes before IEND; bytes after
    IEND (trailers) are ignored by decoders."""
    pos = 8
    while pos + 8 <= len(data):
        if data[pos + 4:pos + 8] == b"IEND":
            return False
        pos += 12 + int.from_bytes(data[pos:pos + 4], "big")
    return True


def _image_bytes_problem(data: bytes) -> Optional[Tuple[str, str]]:
    """Cheap checks before decoding: (kind, reason) for an empty or visibly truncated file, else None.

    Checked before decoding because OpenCV 4 decodes a truncated JPEG with only a warning (the missing rows
    come out grey), and so that a truncated file is named as such rather than as undecodable."""
    if len(data) == 0:
        return ZERO_BYTE, "zero-byte file"
    if data[:2] == b"\xff\xd8" and _jpeg_truncated(data):
        return TRUNCATED, "truncated JPEG (no end-of-image marker); re-export or remove it"
    if data[:8] == b"\x89PNG\r\n\x1a\n" and _png_truncated(data):
        return TRUNCATED, "truncated PNG (no IEND chunk); re-export or remove it"
    return None


def read_image(path: Union[str, os.PathLike], orientation: bool = True) -> np.ndarray:
    """Decode an image file to (H, W, 3) uint8 RGB, honouring EXIF orientation (``orientation=False``: as the
    pixels are stored, as Darknet and LabelImg see them).

    Grayscale, RGBA (alpha dropped), palette and 16-bit images are converted. Raises :class:`BadImageError`
    naming the file for a missing, empty, truncated or undecodable file.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise BadImageError(path, "file not found", MISSING_IMAGE) from None
    except OSError as e:
        raise BadImageError(path, f"cannot be read ({e.strerror or e})") from None
    problem = _image_bytes_problem(data)
    if problem is not None:
        raise BadImageError(path, problem[1], problem[0])
    # IMREAD_COLOR applies EXIF orientation and converts gray / palette / alpha / 16-bit to 8-bit BGR.
    try:
        flags = cv2.IMREAD_COLOR | (0 if orientation else cv2.IMREAD_IGNORE_ORIENTATION)
        image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error as e:  # e.g. more pixels than OpenCV's limit (CV_IO_MAX_IMAGE_PIXELS, 2**30)
        raise BadImageError(path, f"cannot be decoded ({str(e).strip().splitlines()[-1]})") from None
    if image is None or image.size == 0:
        raise BadImageError(path, "cannot be decoded (not an image, or corrupt)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def open_image_header(path: Union[str, os.PathLike]):
    """``PIL.Image.open`` without Pillow's decompression-bomb limit, which guards pixel decodes: a header
    read allocates nothing however large the image (and OpenCV, which decodes, has its own limit)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():  # its warning (89-179 megapixels) would be printed once per run
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except Image.DecompressionBombError:
        pass
    with open(path, "rb") as f:
        prefix = f.read(16)
    for fmt in Image.ID:  # Image.open's own search, minus the size check
        factory, accept = Image.OPEN[fmt]
        result = accept(prefix) if accept else True
        if result and not isinstance(result, str):  # a str is Pillow's "almost, but no" warning
            try:
                return factory(os.fspath(path))
            except (SyntaxError, IndexError, TypeError, struct.error):
                continue
    raise SyntaxError("no image plugin reads this header")


def _png_chunk(path: Union[str, os.PathLike], kind: bytes) -> Optional[bytes]:
    """The payload of the first ``kind`` chunk of a PNG file, seeking from chunk header to chunk header."""
    with open(path, "rb") as f:
        f.seek(8)
        while len(head := f.read(8)) == 8 and head[4:] != b"IEND":
            length = int.from_bytes(head[:4], "big")
            if head[4:] == kind:
                return f.read(length)
            f.seek(length + 4, os.SEEK_CUR)  # payload and CRC
    return None


def exif_orientation(im, path: Union[str, os.PathLike]) -> int:
    """The EXIF orientation OpenCV applies when decoding: a TIFF's own tag, else the EXIF block only.

    Not ``im.getexif()``: that also reads an XMP orientation, which OpenCV ignores, and for a PNG it decodes
    every pixel to find an eXIf chunk after the image data (which OpenCV honours; here it is found by seeking)."""
    from PIL import Image

    if im.format == "TIFF":
        return int(im.tag_v2.get(0x0112, 1))
    data = im.info.get("exif")
    if data is None and im.format == "PNG":
        data = _png_chunk(path, b"eXIf")
    if not data:
        return 1
    exif = Image.Exif()
    exif.load(data)
    return int(exif.get(0x0112, 1))


def image_header(path: Union[str, os.PathLike]) -> Tuple[int, int, str]:
    """(height, width, mode) from the file header only, after EXIF orientation; no pixel decode.

    The size is the one :func:`read_image` produces. Raises :class:`BadImageError` when the header cannot
    be read."""
    from PIL import UnidentifiedImageError

    try:
        if os.path.getsize(path) == 0:
            raise BadImageError(path, "zero-byte file", ZERO_BYTE)
        with open_image_header(path) as im:
            w, h = im.size
            if im.format == "TIFF":  # recent Pillow reports TIFF sizes already rotated; start from the stored one
                w, h = im.tag_v2.get(256, w), im.tag_v2.get(257, h)
            orientation = exif_orientation(im, path)
            mode = im.mode
    except FileNotFoundError:
        raise BadImageError(path, "file not found", MISSING_IMAGE) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise BadImageError(path, f"cannot be decoded ({type(e).__name__}: {e})") from None
    if orientation in (5, 6, 7, 8):  # these EXIF orientations rotate by 90 degrees
        h, w = w, h
    return h, w, mode


def size_or_zero(value: object) -> int:
    """An image side read from an annotation as a positive int, or 0 when it is missing, not a number,
    not finite or not positive (the caller then reads the size from the image header)."""
    try:
        side = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0
    return int(side) if math.isfinite(side) and side >= 1 else 0


def closest_name(name: str, names: Sequence[str]) -> str:
    """' (did you mean 'x'?)' for the nearest known name, or '' when none is close."""
    match = difflib.get_close_matches(name.strip().lower(), [n.lower() for n in names], n=1, cutoff=0.6)
    if not match:
        return ""
    original = next(n for n in names if n.lower() == match[0])
    return f" (did you mean {original!r}?)"


def target_mask(difficult: np.ndarray, include_difficult: bool) -> np.ndarray:
    """Which boxes of a record are training targets: all, or (by default) all but the difficult ones (VOC's
    difficult boxes, COCO's crowd regions)."""
    difficult = np.asarray(difficult, bool)
    return np.ones(len(difficult), bool) if include_difficult else ~difficult


def clean_boxes(
    boxes: np.ndarray,
    labels: np.ndarray,
    difficult: np.ndarray,
    height: int,
    width: int,
    path: str,
    log: ProblemLog,
    names: Sequence[str] = (),
    as_annotated: bool = False,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Drop boxes with non-finite coordinates, clip boxes to the image, drop zero / negative area boxes and
    exact duplicates (each reported).

    Duplicates are boxes of the same class whose coordinates agree within half a pixel. ``as_annotated``
    (splits that are scored, not trained on) reports the same problems but keeps every finite box as written:
    the VOC devkit and pycocotools score annotations as they are, so a duplicate box is a second object to
    find and a box past the edge is matched by its full extent."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    difficult = np.asarray(difficult, dtype=bool).reshape(-1)
    if len(boxes) == 0:
        return boxes, labels, difficult

    def name(i: int) -> str:
        return names[labels[i]] if 0 <= labels[i] < len(names) else f"class {labels[i]}"

    # Before clipping: clip() would turn an infinite coordinate into the image edge, and NaN passes every
    # comparison below as a box that merely "extends outside".
    keep = np.isfinite(boxes).all(1)
    for i in np.flatnonzero(~keep):
        log.add(BAD_BOX, path, f"{name(i)} box [" + ", ".join(f"{v:g}" for v in boxes[i])
                + "] has non-finite coordinates; dropped")
    out = boxes.copy()
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, width)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, height)

    # what a problem box becomes: in a scored split, kept as written
    degenerate, outside, duplicate = ((DEGENERATE_KEPT, OUT_OF_BOUNDS_KEPT, DUPLICATE_KEPT) if as_annotated
                                      else (DEGENERATE, OUT_OF_BOUNDS, DUPLICATE))
    dropped, clipped = ("scored as annotated",) * 2 if as_annotated else ("dropped", "clipped")
    for i in np.flatnonzero(keep):
        box_text = "[" + ", ".join(f"{v:g}" for v in boxes[i]) + "]"
        if out[i, 2] <= out[i, 0] or out[i, 3] <= out[i, 1]:
            log.add(degenerate, path, f"{name(i)} box {box_text} has zero or negative area inside the "
                    f"{width}x{height} image; {dropped}")
            keep[i] = as_annotated
        elif not np.array_equal(out[i], boxes[i]):
            log.add(outside, path, f"{name(i)} box {box_text} extends outside the {width}x{height} image; {clipped}")
    # A box duplicates an earlier box still kept. Which pairs are near is computed at once (a pair loop in
    # Python took seconds for an image of 1,000 boxes); the pass in order stays, since a box dropped as a
    # duplicate no longer counts for later ones.
    candidates = np.flatnonzero(keep & ((out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])))
    near = labels[candidates, None] == labels[None, candidates]
    for c in range(4):
        near &= np.abs(out[candidates, None, c] - out[None, candidates, c]) <= 0.5
    alive = np.ones(len(candidates), bool)
    for a in range(1, len(candidates)):
        if near[a, :a][alive[:a]].any():
            i = candidates[a]
            log.add(duplicate, path, f"{name(i)} box [" + ", ".join(f"{v:g}" for v in boxes[i])
                    + f"] duplicates an earlier box; {dropped}")
            keep[i] = as_annotated
            alive[a] = False
    return (boxes if as_annotated else out)[keep], labels[keep], difficult[keep]
