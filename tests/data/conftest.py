"""Small datasets of each format, written into tmp_path, with every kind of bad input the adapters handle."""
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image


def write_jpeg(path: Path, h: int = 60, w: int = 80, value: int = 90, boxes=()) -> bytes:
    """A grey JPEG with white filled rectangles (0-based continuous xyxy); returns its bytes."""
    img = np.full((h, w, 3), value, np.uint8)
    for x1, y1, x2, y2 in boxes:
        img[int(y1):int(y2), int(x1):int(x2)] = 255
    ok, data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.tobytes())
    return data.tobytes()


def voc_xml(w: int, h: int, objects, size: bool = True) -> str:
    """objects: (name, xmin, ymin, xmax, ymax, difficult or None for a missing tag)."""
    parts = ["<annotation><filename>x.jpg</filename>"]
    if size:
        parts.append(f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>")
    for name, x0, y0, x1, y1, diff in objects:
        tag = "" if diff is None else f"<difficult>{diff}</difficult>"
        parts.append(f"<object><name>{name}</name>{tag}<bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
                     f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>")
    parts.append("</annotation>")
    return "".join(parts)


VOC_NAMES = ["cat", "dog", "person"]


@pytest.fixture
def voc_root(tmp_path):
    """VOC2007 (trainval: every bad case) and VOC2012 (trainval: one clean image)."""
    root = tmp_path / "VOCdevkit"
    y7 = root / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (y7 / sub).mkdir(parents=True)
    ann, img = y7 / "Annotations", y7 / "JPEGImages"
    # 000001: clean; dog at VOC xmin=1..xmax=50 -> x1=0, x2=50
    write_jpeg(img / "000001.jpg", 60, 80)
    (ann / "000001.xml").write_text(voc_xml(80, 60, [("dog", 1, 1, 50, 40, 0), ("cat", 10, 20, 30, 50, 1)]))
    # 000002: missing difficult, unknown class, out of bounds, zero area, duplicate
    write_jpeg(img / "000002.jpg", 60, 80)
    (ann / "000002.xml").write_text(voc_xml(80, 60, [
        ("person", 5, 5, 20, 20, None),
        ("dogs", 1, 1, 10, 10, 0),
        ("cat", 50, 10, 200, 40, 0),
        ("cat", 30, 10, 29, 40, 0),
        ("person", 5, 5, 20, 20, 0),
    ]))
    write_jpeg(img / "000003.jpg", 60, 80)
    (ann / "000003.xml").write_text("<annotation><size><width>80</wid")          # XML parse error
    (ann / "000004.xml").write_text(voc_xml(80, 60, [("cat", 1, 1, 5, 5, 0)]))  # annotation without image
    write_jpeg(img / "000005.jpg", 60, 80)                                       # image without annotation
    data = write_jpeg(img / "000006.jpg", 60, 80)                                # truncated image
    (img / "000006.jpg").write_bytes(data[: len(data) // 2])
    (ann / "000006.xml").write_text(voc_xml(80, 60, [("cat", 1, 1, 5, 5, 0)]))
    (img / "000007.jpg").write_bytes(b"")                                        # zero-byte image
    (ann / "000007.xml").write_text(voc_xml(80, 60, [("cat", 1, 1, 5, 5, 0)]))
    (img / "000008.jpg").write_bytes(b"this is not an image" * 10)                # unreadable image
    (ann / "000008.xml").write_text(voc_xml(80, 60, [("cat", 1, 1, 5, 5, 0)]))
    write_jpeg(img / "000009.jpg", 60, 80)                                       # no <size>: read from image
    (ann / "000009.xml").write_text(voc_xml(80, 60, [("cat", 1, 1, 5, 5, 0)], size=False))
    ids = ["000001", "000002", "000003", "000004", "000005", "000006", "000007", "000008", "000009"]
    (y7 / "ImageSets/Main/trainval.txt").write_text("\n".join(ids) + "\n")
    (y7 / "ImageSets/Main/clean.txt").write_text("000001\n")
    y12 = root / "VOC2012"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (y12 / sub).mkdir(parents=True)
    write_jpeg(y12 / "JPEGImages" / "2012_000001.jpg", 50, 70)
    (y12 / "Annotations" / "2012_000001.xml").write_text(voc_xml(70, 50, [("person", 2, 3, 40, 45, 0)]))
    (y12 / "ImageSets/Main/trainval.txt").write_text("2012_000001\n")
    return root


COCO_CATEGORIES = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 7, "name": "dog"}]


@pytest.fixture
def coco_root(tmp_path):
    """COCO with gapped category ids, crowd boxes, a background image and every bad reference."""
    root = tmp_path / "coco"
    write_jpeg(root / "val2017" / "a.jpg", 60, 80)
    write_jpeg(root / "val2017" / "b.jpg", 40, 50)
    images = [{"id": 10, "file_name": "a.jpg", "height": 60, "width": 80},
              {"id": 11, "file_name": "b.jpg", "height": 40, "width": 50},       # no annotations: background
              {"id": 12, "file_name": "missing.jpg", "height": 40, "width": 50}]  # file missing
    anns = [
        {"id": 1, "image_id": 10, "category_id": 7, "bbox": [10, 5, 20, 30], "iscrowd": 0},
        {"id": 2, "image_id": 10, "category_id": 3, "bbox": [0, 0, 5, 5], "iscrowd": 0},
        {"id": 3, "image_id": 10, "category_id": 1, "bbox": [0, 0, 80, 60], "iscrowd": 1},    # crowd
        {"id": 4, "image_id": 99, "category_id": 1, "bbox": [0, 0, 5, 5], "iscrowd": 0},     # missing image
        {"id": 5, "image_id": 10, "category_id": 5, "bbox": [0, 0, 5, 5], "iscrowd": 0},     # missing category
        {"id": 6, "image_id": 10, "category_id": 1, "bbox": [70, 50, 30, 30], "iscrowd": 0}, # out of bounds
        {"id": 7, "image_id": 10, "category_id": 1, "bbox": [5, 5, 0, 10], "iscrowd": 0},    # zero area
        {"id": 8, "image_id": 10, "category_id": 7, "bbox": [10, 5, 20, 30], "iscrowd": 0},  # duplicate
    ]
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_val2017.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": COCO_CATEGORIES}))
    return root


@pytest.fixture
def yolo_root(tmp_path):
    """YOLO txt: bad lines of every kind, a background image, an orphan label, 16-bit and EXIF images."""
    root = tmp_path / "yolo"
    images, labels = root / "images" / "train", root / "labels" / "train"
    labels.mkdir(parents=True)
    write_jpeg(images / "a.jpg", 100, 200)
    (labels / "a.txt").write_text("\n".join([
        "0 0.5 0.5 0.2 0.4",        # good: x 80..120, y 30..70
        "1 0.5 0.5 0.2",            # wrong field count
        "0 120 80 30 30",           # pixel values, not normalized
        "5 0.5 0.5 0.1 0.1",        # class index out of range
        "1 0.95 0.5 0.2 0.2",       # extends past the right edge: clipped
        "0 0.5 0.5 0.2 0.4",        # duplicate
        "",
    ]))
    write_jpeg(images / "b.jpg", 50, 60)  # no label file: background
    (images / "c.jpg").write_bytes(b"")  # zero-byte
    (labels / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    gray16 = (np.arange(40 * 30).reshape(30, 40) * 50).astype(np.uint16)
    cv2.imwrite(str(images / "d.png"), gray16)
    (labels / "d.txt").write_text("1 0.5 0.5 0.5 0.5\n")
    pil = Image.fromarray(np.zeros((30, 60, 3), np.uint8))  # stored 60 wide, 30 high; EXIF 6: shown 30x60
    exif = pil.getexif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    pil.save(buf, "JPEG", exif=exif.tobytes())
    (images / "e.jpg").write_bytes(buf.getvalue())
    (labels / "e.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    return root
