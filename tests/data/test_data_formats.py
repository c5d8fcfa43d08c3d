"""VOC, COCO and YOLO txt adapters: records, coordinate conventions, and every bad case reported."""
import io
import json
import struct
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from yolo_attn.data import (
    BadImageError, COCODataset, DetectionDataset, Record, VOCDataset, YOLOTxtDataset, build_dataset, load_data_config,
    read_image,
)
from yolo_attn.data import records as R
from yolo_attn.data.voc import parse_voc_xml
from yolo_attn.eval.coco import load_coco_ground_truth
from yolo_attn.utils.checkpoint import read_class_names

from .conftest import COCO_CATEGORIES, VOC_NAMES, voc_xml, write_jpeg


def kinds(ds):
    return ds.problems.counts()


def by_id(ds):
    return {r.image_id: r for r in ds.records}


# ---------------------------------------------------------------------------------------------- VOC
def test_voc_records_and_coordinates(voc_root):
    ds = VOCDataset(voc_root, ["VOC2007/clean"], VOC_NAMES)
    assert len(ds) == 1 and ds.names == VOC_NAMES and ds.category_ids == [1, 2, 3]
    rec = ds.get_annotation(0)
    assert rec.image is None and (rec.height, rec.width) == (60, 80) and rec.image_id == "000001"
    # VOC 1-based inclusive (1, 1, 50, 40) -> 0-based continuous (0, 0, 50, 40)
    np.testing.assert_allclose(rec.boxes, [[0, 0, 50, 40], [9, 19, 30, 50]])
    assert rec.labels.tolist() == [1, 0] and rec.difficult.tolist() == [False, True]
    assert rec.boxes.dtype == np.float32 and rec.labels.dtype == np.int64
    full = ds.load_record(0)
    assert full.image.shape == (60, 80, 3) and full.image.dtype == np.uint8


def test_voc_every_bad_case_is_reported(voc_root):
    ds = VOCDataset(voc_root, ["VOC2007/trainval", "VOC2012/trainval"], VOC_NAMES)
    k = kinds(ds)
    assert k[R.MISSING_DIFFICULT] == 1
    assert k[R.UNKNOWN_CLASS] == 1
    assert k[R.OUT_OF_BOUNDS] == 1
    assert k[R.DEGENERATE] == 1
    assert k[R.DUPLICATE] == 1
    assert k[R.XML_ERROR] == 1
    assert k[R.MISSING_IMAGE] == 1
    assert k[R.MISSING_ANNOTATION] == 1
    assert k[R.MISSING_SIZE] == 1
    unknown = next(p for p in ds.problems.problems if p.kind == R.UNKNOWN_CLASS)
    assert "000002.xml" in unknown.path and "did you mean 'dog'" in unknown.message
    recs = by_id(ds)
    assert "2012_000001" in recs and "000003" not in recs and "000004" not in recs and "000005" not in recs
    r2 = recs["000002"]
    # person (missing difficult -> 0), cat clipped to the 80 px width; the zero-area cat, the unknown
    # 'dogs' and the duplicate person are gone
    np.testing.assert_allclose(r2.boxes, [[4, 4, 20, 20], [49, 9, 80, 40]])
    assert r2.labels.tolist() == [2, 0] and not r2.difficult.any()
    assert (recs["000009"].height, recs["000009"].width) == (60, 80)
    for i, r in enumerate(ds.records):
        if r.image_id in ("000006", "000007", "000008"):
            with pytest.raises(BadImageError, match=r.image_id):
                ds.load_record(i)


def mini_voc(tmp_path, xml_text, h=60, w=80):
    """A VOCdevkit with one 80x60 image ``a`` and the given annotation; returns the dataset."""
    year = tmp_path / "VOCdevkit" / "VOC2007"
    (year / "Annotations").mkdir(parents=True)
    (year / "ImageSets" / "Main").mkdir(parents=True)
    write_jpeg(year / "JPEGImages" / "a.jpg", h, w)
    (year / "Annotations" / "a.xml").write_text(xml_text)
    (year / "ImageSets" / "Main" / "train.txt").write_text("a\n")
    return VOCDataset(tmp_path / "VOCdevkit", ["VOC2007/train"], VOC_NAMES)


def test_voc_name_whitespace_and_numeric_difficult(tmp_path):
    xml = tmp_path / "a.xml"
    xml.write_text(voc_xml(80, 60, [(" cat\n", 1, 1, 10, 10, 0), ("dog", 1, 1, 20, 20, "0.0"),
                                    ("person", 1, 1, 30, 30, "1.0"), ("dog", 1, 1, 40, 40, " 0 ")]))
    log = R.ProblemLog()
    _, _, _, labels, difficult = parse_voc_xml(xml, VOC_NAMES, log)
    assert labels.tolist() == [0, 1, 2, 1] and difficult.tolist() == [False, False, True, False]
    assert len(log) == 0, log.problems


@pytest.mark.parametrize("bad", ["inf", "nan", "-60", "sixty"])
def test_voc_unusable_size_is_read_from_the_image(tmp_path, bad):
    xml = voc_xml(80, 60, [("cat", 1, 1, 10, 10, 0)]).replace("<height>60</height>", f"<height>{bad}</height>")
    ds = mini_voc(tmp_path, xml)
    assert (ds.records[0].height, ds.records[0].width) == (60, 80)
    assert kinds(ds) == {R.MISSING_SIZE: 1}


def test_voc_missing_image_set_is_a_clear_error(voc_root):
    with pytest.raises(FileNotFoundError, match="ImageSets/Main/test.txt"):
        VOCDataset(voc_root, ["VOC2007/test"], VOC_NAMES)
    latin = voc_root / "VOC2007" / "ImageSets" / "Main" / "latin.txt"
    latin.write_bytes("000001\ncaf\xe9\n".encode("latin-1"))  # it said only: 'utf-8' codec can't decode byte 0xe9
    with pytest.raises(ValueError, match=r"latin.txt: not a list of image ids \(not UTF-8 text, byte 10; data "
                                         r"config entry 'VOC2007/latin'\)"):
        VOCDataset(voc_root, ["VOC2007/latin"], VOC_NAMES)


# ---------------------------------------------------------------------------------------------- COCO
def test_coco_ids_crowd_background_and_bad_references(coco_root):
    ds = COCODataset(coco_root, ["val2017"], ["person", "car", "dog"])
    assert ds.category_ids == [1, 3, 7]
    recs = by_id(ds)
    assert set(recs) == {10, 11}  # 12 has no file
    a = recs[10]
    # dog [10, 5, 20, 30] xywh -> xyxy; car; the crowd region, difficult (never a target; the VOC metrics
    # ignore detections on it, as COCOeval does); person clipped; zero-area, duplicate, bad refs gone
    np.testing.assert_allclose(a.boxes, [[10, 5, 30, 35], [0, 0, 5, 5], [0, 0, 80, 60], [70, 50, 80, 60]])
    assert a.labels.tolist() == [2, 1, 0, 0]
    assert a.difficult.tolist() == [False, False, True, False]
    assert [ds.category_ids[k] for k in a.labels] == [7, 3, 1, 1]
    assert len(recs[11].labels) == 0  # background image kept
    k = kinds(ds)
    assert k[R.COCO_MISSING_IMAGE] == 1 and k[R.COCO_MISSING_CATEGORY] == 1 and k[R.MISSING_IMAGE] == 1
    assert k[R.OUT_OF_BOUNDS] == 1 and k[R.DEGENERATE] == 1 and k[R.DUPLICATE] == 1


def test_coco_image_id_given_to_two_images_skips_both_with_their_annotations(coco_root):
    """pycocotools keeps the last image of an id and gives it every annotation of the id, so whose boxes they
    are cannot be told: both images are reported once and left out, their annotations with them."""
    ann_file = coco_root / "annotations" / "instances_val2017.json"
    data = json.loads(ann_file.read_text())
    data["images"][1]["id"] = 10  # b.jpg takes a.jpg's id
    ann_file.write_text(json.dumps(data))
    ds = COCODataset(coco_root, ["val2017"], ["person", "car", "dog"])
    assert set(by_id(ds)) == set()  # 12 has no file
    k = kinds(ds)
    assert k[R.COCO_DUPLICATE_IMAGE_ID] == 1 and k[R.COCO_MISSING_IMAGE] == 1  # annotation 4's image 99 only
    (problem,) = [p for p in ds.problems.problems if p.kind == R.COCO_DUPLICATE_IMAGE_ID]
    assert "image id 10 is given to 2 images (a.jpg, b.jpg)" in problem.message


def test_coco_box_messages_name_classes_after_a_duplicate_id_and_a_shared_file_is_reported(coco_root):
    """Box messages named the class by the file names of an image id given twice (a variable was reused), and
    one file under two image ids (each kept, as pycocotools scores them) went unsaid."""
    ann_file = coco_root / "annotations" / "instances_val2017.json"
    data = json.loads(ann_file.read_text())
    data["images"] += [{"id": 50, "file_name": "x.jpg", "height": 40, "width": 50},
                       {"id": 50, "file_name": "y.jpg", "height": 40, "width": 50},
                       {"id": 60, "file_name": "a.jpg", "height": 60, "width": 80}]
    ann_file.write_text(json.dumps(data))
    ds = COCODataset(coco_root, ["val2017"], ["person", "car", "dog"])
    assert set(by_id(ds)) == {10, 11, 60}
    messages = {p.kind: p.message for p in ds.problems.problems}
    assert "image id 50 is given to 2 images (x.jpg, y.jpg)" in messages[R.COCO_DUPLICATE_IMAGE_ID]
    assert messages[R.OUT_OF_BOUNDS].startswith("person box [70, 50, 100, 80]")  # was: "x box ..."
    assert messages[R.COCO_SHARED_FILE] == ("a.jpg is the file of image ids 10, 60; each is kept with its own "
                                            "annotations")


def test_coco_crowd_regions_are_never_training_boxes(coco_root):
    """Kept as difficult boxes for evaluation, they stay out of the targets and the anchor statistics, even
    with train_difficult (VOC's option)."""
    from yolo_attn.engine.anchors import box_sizes

    cfg = load_data_config({"format": "coco", "root": str(coco_root), "train": "val2017", "val": "val2017",
                            "names": ["person", "car", "dog"], "train_difficult": True})
    ds = build_dataset(cfg, "train")
    assert not ds.include_difficult
    wh = box_sizes(ds, 80)  # the 80x60 image at its own scale
    assert sorted(map(tuple, wh.tolist())) == [(5.0, 5.0), (10.0, 10.0), (20.0, 30.0)]  # not the 80x60 crowd


def test_coco_names_from_json_and_reordered(coco_root):
    ds = COCODataset(coco_root, ["val2017"])
    assert ds.names == [c["name"] for c in COCO_CATEGORIES] and ds.category_ids == [1, 3, 7]
    ds = COCODataset(coco_root, ["val2017"], ["dog", "person", "car"])
    assert ds.category_ids == [7, 1, 3]
    assert by_id(ds)[10].labels.tolist() == [0, 2, 1, 1]  # dog, car, person crowd, person


def test_coco_file_names_with_folders_are_looked_up_where_they_point(coco_root):
    """`train2017/a.jpg` under image folder train2017 is train2017/train2017/a.jpg: it was found by its bare name
    and recorded at a path that does not exist, failing only when loaded."""
    ann_file = coco_root / "annotations" / "instances_val2017.json"
    data = json.loads(ann_file.read_text())
    data["images"][0]["file_name"] = "val2017/a.jpg"
    write_jpeg(coco_root / "val2017" / "sub" / "b.jpg", 40, 50)
    data["images"][1]["file_name"] = "sub/b.jpg"  # a real subfolder is fine
    ann_file.write_text(json.dumps(data))
    ds = COCODataset(coco_root, ["val2017"], ["person", "car", "dog"])
    assert set(by_id(ds)) == {11} and Path(by_id(ds)[11].path).is_file()
    missing = [p for p in ds.problems.problems if p.kind == R.MISSING_IMAGE]
    assert sorted(Path(p.path).name for p in missing) == ["a.jpg", "missing.jpg"]
    assert any(str(coco_root / "val2017" / "val2017" / "a.jpg") == str(p.path) for p in missing)


def test_coco_categories_sharing_a_name_are_an_error(coco_root):
    """With two categories named 'car', the config's names took one id and dropped the other's boxes unreported;
    names read from the JSON made 'car' two classes."""
    ann_file = coco_root / "annotations" / "instances_val2017.json"
    data = json.loads(ann_file.read_text())
    data["categories"].append({"id": 9, "name": "car"})
    ann_file.write_text(json.dumps(data))
    for names in (["person", "car", "dog"], None):
        with pytest.raises(ValueError, match=r"instances_val2017.json: categories 3, 9 are all named 'car'"):
            COCODataset(coco_root, ["val2017"], names)


MALFORMED_COCO = {
    "an image without id": (lambda d: d["images"][1].pop("id"), r"image 1 \(b.jpg\) has no `id`"),
    "category ids as text": (lambda d: d["categories"][0].update(id="1"), r"category 'person' has id '1'"),
    "image ids of both kinds": (lambda d: d["images"][1].update(id="11"), r"image ids mix numbers and text"),
    "annotations not a list": (lambda d: d.update(annotations={"1": {}}), r"`annotations` is a dict, not a list"),
    "an image not an object": (lambda d: d["images"].append(12), r"`images` entry 3 is 12, not an object"),
    "a category without a name": (lambda d: d["categories"][0].pop("name"), r"category 1 has no name"),
}


@pytest.mark.parametrize("mangle,message", MALFORMED_COCO.values(), ids=list(MALFORMED_COCO))
def test_malformed_coco_json_is_one_clear_error(coco_root, mangle, message):
    """Each gave a KeyError ('id'), a TypeError from sorting or iterating, or a pycocotools error after a
    whole evaluation's inference; now a ValueError naming the file, when the dataset loads."""
    ann_file = coco_root / "annotations" / "instances_val2017.json"
    data = json.loads(ann_file.read_text())
    mangle(data)
    ann_file.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"instances_val2017.json: " + message):
        COCODataset(coco_root, ["val2017"])


def test_coco_annotations_null_is_an_unannotated_split(coco_root):
    ann_file = coco_root / "annotations" / "instances_val2017.json"
    data = json.loads(ann_file.read_text())
    data["annotations"] = None
    ann_file.write_text(json.dumps(data))
    ds = COCODataset(coco_root, ["val2017"])
    assert len(ds) == 2 and all(len(r.labels) == 0 for r in ds.records)
    assert load_coco_ground_truth(ann_file).getAnnIds() == []


def test_voc_and_coco_files_with_a_byte_order_mark(voc_root, coco_root):
    """Windows editors write a BOM: it became part of the first image id of a VOC set file (that image was
    reported missing) and COCO JSONs failed to parse."""
    set_file = voc_root / "VOC2007" / "ImageSets" / "Main" / "clean.txt"
    set_file.write_bytes("000001\r\n".encode("utf-8-sig"))
    assert [r.image_id for r in VOCDataset(voc_root, ["VOC2007/clean"], VOC_NAMES).records] == ["000001"]
    ann_file = coco_root / "annotations" / "instances_val2017.json"
    ann_file.write_bytes(ann_file.read_text().encode("utf-8-sig"))
    assert set(by_id(COCODataset(coco_root, ["val2017"], ["person", "car", "dog"]))) == {10, 11}
    assert len(load_coco_ground_truth(ann_file).getImgIds()) == 3
    names = voc_root / "voc.names"
    names.write_bytes("aeroplane\r\nbicycle\r\n".encode("utf-8-sig"))
    assert read_class_names(names) == ["aeroplane", "bicycle"]


@pytest.mark.parametrize("height", [float("inf"), float("nan"), "sixty", -60, None, [60]])
def test_coco_unusable_size_is_read_from_the_image(coco_root, height):
    ann_file = coco_root / "annotations" / "instances_val2017.json"
    data = json.loads(ann_file.read_text())
    data["images"][0]["height"] = height  # a.jpg, 80x60
    ann_file.write_text(json.dumps(data))
    ds = COCODataset(coco_root, ["val2017"])
    a = by_id(ds)[10]
    assert (a.height, a.width) == (60, 80)
    assert any(p.kind == R.MISSING_SIZE and "a.jpg" in p.path for p in ds.problems.problems)


# ---------------------------------------------------------------------------------------------- boxes
def test_duplicates_are_the_boxes_near_an_earlier_box_still_kept():
    """Checked against the pair loop it replaced, on dense images with chains of near boxes: b is within half a
    pixel of a (dropped), c within half a pixel of b but not of a (kept: b no longer counts)."""
    log = R.ProblemLog()
    chain = [[10, 10, 20, 20], [10.4, 10, 20, 20], [10.8, 10, 20, 20], [10.8, 10, 20, 20]]
    out, labels, _ = R.clean_boxes(chain, [0, 0, 0, 1], np.zeros(4, bool), 60, 80, "x.txt", log)
    np.testing.assert_allclose(out, [[10, 10, 20, 20], [10.8, 10, 20, 20], [10.8, 10, 20, 20]])
    assert labels.tolist() == [0, 0, 1] and log.counts() == {R.DUPLICATE: 1}

    def pair_loop(boxes, labels):
        keep = np.ones(len(boxes), bool)
        for i in range(len(boxes)):
            for j in range(i):
                if keep[j] and labels[j] == labels[i] and np.all(np.abs(boxes[j] - boxes[i]) <= 0.5):
                    keep[i] = False
                    break
        return keep

    rng = np.random.default_rng(0)
    for _ in range(5):
        corners = rng.integers(0, 60, (300, 2)).astype(np.float32)
        boxes = np.concatenate([corners, corners + 8], 1) + rng.choice([0, 0.3, 0.6], (300, 4))
        labels = rng.integers(0, 2, 300)
        out, kept_labels, _ = R.clean_boxes(boxes, labels, np.zeros(300, bool), 100, 100, "x.txt", R.ProblemLog())
        keep = pair_loop(boxes.astype(np.float32), labels)
        assert 0 < keep.sum() < 300
        np.testing.assert_array_equal(out, boxes.astype(np.float32)[keep])
        np.testing.assert_array_equal(kept_labels, labels[keep])


def test_non_finite_boxes_are_dropped_with_their_own_message():
    nan, inf = float("nan"), float("inf")
    boxes = [[nan, 0, 10, 10], [0, 0, inf, 5], [-inf, 0, 10, 10], [1, 1, 5, 5]]
    log = R.ProblemLog()
    out, labels, _ = R.clean_boxes(boxes, [0, 1, 0, 1], np.zeros(4, bool), 60, 80, "x.xml", log, ["a", "b"])
    np.testing.assert_array_equal(out, [[1, 1, 5, 5]])
    assert labels.tolist() == [1]
    assert log.counts() == {R.BAD_BOX: 3}  # not "clipped", not "zero area"
    assert all("non-finite" in p.message and p.path == "x.xml" for p in log.problems)


def test_non_finite_coordinates_in_voc_and_coco(tmp_path, coco_root):
    ds = mini_voc(tmp_path, voc_xml(80, 60, [("cat", "nan", 1, 10, 10, 0), ("dog", 1, 1, 10, 10, 0)]))
    assert ds.records[0].labels.tolist() == [1] and kinds(ds) == {R.BAD_BOX: 1}
    ann_file = coco_root / "annotations" / "instances_val2017.json"
    data = json.loads(ann_file.read_text())
    data["annotations"][0]["bbox"] = [float("nan"), 5, 20, 30]  # json writes NaN, as Python exports do
    ann_file.write_text(json.dumps(data))
    ds = COCODataset(coco_root, ["val2017"])
    assert np.isfinite(by_id(ds)[10].boxes).all()
    assert any(p.kind == R.BAD_BOX and "non-finite" in p.message for p in ds.problems.problems)


# ---------------------------------------------------------------------------------------------- YOLO
def test_yolo_lines_background_and_headers(yolo_root):
    ds = YOLOTxtDataset(yolo_root, ["images/train"], ["a", "b"])
    recs = {r.path.rsplit("/", 1)[-1]: r for r in ds.records}
    assert set(recs) == {"a.jpg", "b.jpg", "d.png", "e.jpg"}  # c.jpg is zero bytes
    a = recs["a.jpg"]
    np.testing.assert_allclose(a.boxes, [[80, 30, 120, 70], [170, 40, 200, 60]], atol=1e-4)
    assert a.labels.tolist() == [0, 1] and ds.category_ids == [1, 2]
    assert len(recs["b.jpg"].labels) == 0
    assert (recs["e.jpg"].height, recs["e.jpg"].width) == (60, 30)  # EXIF rotation applied to the header size
    k = kinds(ds)
    assert k[R.BAD_LINE] == 1 and k[R.NOT_NORMALIZED] == 1 and k[R.UNKNOWN_CLASS] == 1
    assert k[R.OUT_OF_BOUNDS] == 1 and k[R.DUPLICATE] == 1 and k[R.ZERO_BYTE] == 1
    bad_line = next(p for p in ds.problems.problems if p.kind == R.BAD_LINE)
    assert bad_line.path.endswith("a.txt") and "line 2" in bad_line.message
    e = ds.load_record(ds.records.index(recs["e.jpg"]))
    assert e.image.shape == (60, 30, 3)


def one_yolo_image(tmp_path, label_bytes: bytes):
    root = tmp_path / "yolo"
    write_jpeg(root / "images" / "train" / "a.jpg", 100, 200)
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "train" / "a.txt").write_bytes(label_bytes)
    return YOLOTxtDataset(root, ["images/train"], ["a", "b"])


def test_yolo_segmentation_lines_are_their_polygons_boxes(tmp_path):
    """Ultralytics' -seg datasets (and Roboflow's polygon exports) label `class x1 y1 x2 y2 x3 y3 ...`:
    detection trains on each polygon's box, as Ultralytics does; 6 or 8 fields are still no line of either."""
    ds = one_yolo_image(tmp_path, b"1 0.1 0.2 0.3 0.2 0.2 0.6\n0 0.5 0.5 0.2 0.4\n"
                                  b"0 0.1 0.2 0.3 0.4 0.5\n0 0.1 nan 0.3 0.2 0.2 0.6\n")
    (record,) = ds.records
    np.testing.assert_allclose(record.boxes, [[20, 20, 60, 60], [80, 30, 120, 70]], atol=1e-4)  # 200 x 100
    assert record.labels.tolist() == [1, 0]
    k = kinds(ds)
    assert k[R.BAD_LINE] == 1 and k[R.NOT_NORMALIZED] == 1  # 6 fields; a NaN vertex


@pytest.mark.parametrize("cls", ["nan", "inf", "-inf"])
def test_yolo_non_finite_class_is_a_counted_problem(tmp_path, cls):
    ds = one_yolo_image(tmp_path, f"0 0.5 0.5 0.2 0.4\n{cls} 0.5 0.5 0.2 0.2\n".encode())
    assert ds.records[0].labels.tolist() == [0]
    assert kinds(ds) == {R.UNKNOWN_CLASS: 1}
    problem = ds.problems.problems[0]
    assert problem.path.endswith("a.txt") and "line 2" in problem.message


def test_yolo_label_with_byte_order_mark_keeps_its_first_box(tmp_path):
    ds = one_yolo_image(tmp_path, "0 0.5 0.5 0.2 0.4\r\n1 0.25 0.5 0.1 0.2\r\n".encode("utf-8-sig"))
    assert ds.records[0].labels.tolist() == [0, 1] and len(ds.problems) == 0


def test_yolo_label_file_of_two_images_is_reported(tmp_path):
    """im5.jpg and im5.png both look for labels/im5.txt: both take its boxes, as in Ultralytics, and the
    clash is a counted problem naming the label file and both images; unlabelled twins are no clash."""
    images, labels = tmp_path / "images", tmp_path / "labels"
    labels.mkdir(parents=True)
    for name in ("im5.jpg", "im5.png", "bg.jpg", "bg.png"):
        write_jpeg(images / name, 100, 200)
    (labels / "im5.txt").write_text("0 0.5 0.5 0.2 0.4\n")
    ds = YOLOTxtDataset(tmp_path, ["images"], ["a", "b"])
    assert [len(r.labels) for r in ds.records] == [0, 0, 1, 1]
    assert kinds(ds) == {R.SHARED_LABEL: 1}
    problem = ds.problems.problems[0]
    assert problem.path.endswith("im5.txt") and "im5.jpg" in problem.message and "im5.png" in problem.message


# ---------------------------------------------------------------------------------------------- images
def _png_bytes(array, mode=None):
    buf = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buf, "PNG") if mode else Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def test_read_image_converts_modes_and_honours_exif(tmp_path):
    rgb = np.zeros((10, 20, 3), np.uint8)
    rgb[:, :10] = (200, 30, 40)
    (tmp_path / "gray.png").write_bytes(_png_bytes(rgb[:, :, 0]))
    (tmp_path / "rgba.png").write_bytes(_png_bytes(np.dstack([rgb, np.full((10, 20), 128, np.uint8)])))
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "pal.png")
    cv2.imwrite(str(tmp_path / "g16.png"), (np.full((10, 20), 40000)).astype(np.uint16))
    for name in ("gray.png", "rgba.png", "pal.png", "g16.png"):
        img = read_image(tmp_path / name)
        assert img.shape == (10, 20, 3) and img.dtype == np.uint8, name
    assert tuple(read_image(tmp_path / "rgba.png")[0, 0]) == (200, 30, 40)  # RGB order, alpha dropped
    assert tuple(read_image(tmp_path / "pal.png")[0, 0]) == (200, 30, 40)
    assert read_image(tmp_path / "g16.png")[0, 0, 0] == 40000 >> 8
    pil = Image.fromarray(rgb)
    exif = pil.getexif()
    exif[0x0112] = 6
    pil.save(tmp_path / "exif.jpg", exif=exif.tobytes())
    img = read_image(tmp_path / "exif.jpg")
    assert img.shape == (20, 10, 3) and img[0, 5, 0] > 150  # rotated 90 degrees clockwise: red on top


def test_an_image_annotated_as_stored_is_read_as_stored(tmp_path):
    """A 60x30 JPEG that EXIF turns upright (30x60), annotated as LabelImg and Darknet see it (<size> 60x30,
    a box at x 40-58): its boxes fell outside the turned image and were dropped without a word. The
    annotated size says which way it was annotated; an upright annotation still reads it upright."""
    from yolo_attn.data.check import _inspect

    pil = Image.fromarray(np.zeros((30, 60, 3), np.uint8))
    exif = pil.getexif()
    exif[0x0112] = 6
    path = tmp_path / "turned.jpg"
    pil.save(path, exif=exif.tobytes())
    box = np.array([[40, 5, 58, 25]], np.float32)
    stored = Record(None, box, np.array([0]), np.array([False]), "a", str(path), 30, 60)
    upright = Record(None, box[:, [1, 0, 3, 2]], np.array([0]), np.array([False]), "b", str(path), 60, 30)
    ds = DetectionDataset([stored, upright], ["a"])
    a, b = ds.load_record(0), ds.load_record(1)
    assert a.image.shape == (30, 60, 3) and a.boxes.tolist() == box.tolist()
    assert b.image.shape == (60, 30, 3) and b.boxes.tolist() == box[:, [1, 0, 3, 2]].tolist()
    problem, note = _inspect(stored)  # tools/check_data.py says so, and calls it no size problem
    assert problem is None and "EXIF orientation ignored, as the annotated size says" in note
    assert _inspect(upright) == (None, f"{path}: EXIF orientation applied")


@pytest.mark.parametrize("content,reason", [(b"", "zero-byte"), (b"GIF89a-garbage" * 5, "cannot be decoded"),
                                            (None, "truncated")])
def test_read_image_bad_files(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    if content is None:
        data = write_jpeg(path)
        content = data[: len(data) * 2 // 3]
    path.write_bytes(content)
    with pytest.raises(BadImageError, match=reason) as err:
        read_image(path)
    assert str(path) in str(err.value)
    with pytest.raises(BadImageError, match="file not found"):
        read_image(tmp_path / "nope.jpg")


# ---------------------------------------------------------------------------------------------- configs
def test_config_build_and_validation(tmp_path, voc_root, coco_root):
    cfg_path = tmp_path / "voc.yaml"
    cfg_path.write_text(f"format: voc\nroot: {voc_root}\ntrain: VOC2007/clean\nval: [VOC2012/trainval]\n"
                        "names: {0: cat, 1: dog, 2: person}\n")
    cfg = load_data_config(cfg_path)
    assert cfg["train"] == ["VOC2007/clean"] and cfg["names"] == VOC_NAMES and cfg["train_difficult"] is False
    assert len(build_dataset(cfg, "val")) == 1
    rel = tmp_path / "configs"
    rel.mkdir()
    (rel / "c.yaml").write_text("format: coco\nroot: ../coco\ntrain: val2017\nval: val2017\n")
    cfg = load_data_config(rel / "c.yaml")  # a root relative to the config file's folder
    assert build_dataset(cfg, "train").names == ["person", "car", "dog"]
    with pytest.raises(ValueError, match="format"):
        load_data_config({"format": "pascal", "root": str(voc_root), "train": "a", "val": "b", "names": ["x"]})
    with pytest.raises(ValueError, match="names"):
        load_data_config({"format": "voc", "root": str(voc_root), "train": "a", "val": "b"})
    with pytest.raises(FileNotFoundError, match="no such data config"):
        load_data_config(tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match="a folder, not a data config"):  # it said "no such data config"
        load_data_config(tmp_path)
    digits = {"format": "voc", "root": str(voc_root), "train": "a", "val": "b"}
    assert load_data_config(dict(digits, names=[0, 1, 2]))["names"] == ["0", "1", "2"]  # unquoted digits
    with pytest.raises(ValueError, match=r'class 1 of `names` is the boolean False: .* quote the name \("no"\)'):
        load_data_config(dict(digits, names=["stop", False]))  # `names: [stop, no]` in YAML
    with pytest.raises(KeyError, match="test"):
        build_dataset(load_data_config(cfg_path), "test")


def _with_trailer(data: bytes) -> bytes:
    return data + b"phone trailer, no end marker in here " * 8 + bytes(200)


def test_read_image_accepts_bytes_after_the_end_marker(tmp_path):
    jpg, png = tmp_path / "a.jpg", tmp_path / "a.png"
    jpg.write_bytes(_with_trailer(write_jpeg(tmp_path / "tmp.jpg", 60, 80)))
    png.write_bytes(_with_trailer(_png_bytes(np.zeros((60, 80, 3), np.uint8))))
    for path in (jpg, png):
        assert read_image(path).shape == (60, 80, 3), path.name


def test_truncated_files_are_still_reported(tmp_path):
    data = write_jpeg(tmp_path / "tmp.jpg", 60, 80)
    # an APP1 segment carrying a thumbnail's own end marker, as EXIF thumbnails do: it must not count
    app1 = b"thumbnail\0\xff\xd8\xff\xd9"
    with_thumb = data[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + data[2:]
    (tmp_path / "thumb.jpg").write_bytes(with_thumb)
    assert read_image(tmp_path / "thumb.jpg").shape == (60, 80, 3)
    png = _png_bytes(np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8))
    cases = {"cut.jpg": with_thumb[: len(with_thumb) * 2 // 3], "header.jpg": with_thumb[:30],
             "cut.png": png[: len(png) * 2 // 3] + b"IEND" + bytes(8)}  # an IEND-like tail is no IEND chunk
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(BadImageError, match="truncated") as err:
            read_image(tmp_path / name)
        assert err.value.kind == R.TRUNCATED and name in str(err.value)


def _png_header_only(width: int, height: int, idat: bytes) -> bytes:
    """A 1-bit grayscale PNG of the given size with the given (zlib) pixel data."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_image_header_of_a_huge_image(tmp_path):
    # 20000 x 20000 (400 MP, past Pillow's decompression-bomb limit), 50 KB on disk; only headers are read
    big = tmp_path / "yolo" / "images" / "train" / "big.png"
    big.parent.mkdir(parents=True)
    big.write_bytes(_png_header_only(20000, 20000, zlib.compress(bytes(20000 * 2501), 1)))
    assert R.image_header(big) == (20000, 20000, "1")
    ds = YOLOTxtDataset(tmp_path / "yolo", ["images/train"], ["a"])
    assert (ds.records[0].height, ds.records[0].width) == (20000, 20000) and len(ds.problems) == 0
    # between Pillow's warning and its error (89-179 MP): read as quietly, not with a DecompressionBombWarning
    (tmp_path / "large.png").write_bytes(_png_header_only(12000, 10000, zlib.compress(bytes(12000 * 1251), 1)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert R.image_header(tmp_path / "large.png") == (10000, 12000, "1")
    # past OpenCV's own limit (2**30 pixels) decoding fails with a message naming the file, not cv2.error
    (tmp_path / "giant.png").write_bytes(_png_header_only(40000, 40000, zlib.compress(bytes(10))))
    with pytest.raises(BadImageError, match="giant.png"):
        read_image(tmp_path / "giant.png")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_image_header_size_matches_the_decoded_image(tmp_path, fmt, orientation):
    from PIL import features

    if fmt == "WEBP" and not features.check("webp"):
        pytest.skip("Pillow without WebP")
    path = tmp_path / f"a.{fmt.lower()}"
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(np.zeros((40, 80, 3), np.uint8)).save(path, fmt, exif=exif.tobytes())
    h, w, _ = R.image_header(path)
    assert (h, w) == read_image(path).shape[:2]
    assert (h, w) == ((80, 40) if orientation in (6, 8) else (40, 80))


def test_image_header_orientation_is_the_one_opencv_applies(tmp_path):
    img = Image.fromarray(np.zeros((40, 80, 3), np.uint8))
    # an eXIf chunk after the pixel data (allowed by the first PNG EXIF spec; OpenCV honours it)
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    img.save(buf, "PNG", exif=exif.tobytes())
    data, pos, chunks = buf.getvalue(), 8, []
    while pos < len(data):
        end = pos + 12 + struct.unpack(">I", data[pos:pos + 4])[0]
        chunks.append(data[pos:end])
        pos = end
    exif_chunk = next(c for c in chunks if c[4:8] == b"eXIf")
    rest = [c for c in chunks if c is not exif_chunk]
    (tmp_path / "late.png").write_bytes(data[:8] + b"".join(rest[:-1]) + exif_chunk + rest[-1])
    # an orientation only in XMP, which Pillow's getexif() reports and OpenCV ignores
    img.save(tmp_path / "xmp.jpg", xmp=b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/'
             b'1999/02/22-rdf-syntax-ns#"><rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/"'
             b' tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>')
    for name in ("late.png", "xmp.jpg"):
        assert R.image_header(tmp_path / name)[:2] == read_image(tmp_path / name).shape[:2], name


def test_darknet_data_file_is_a_data_config(tmp_path, monkeypatch, caplog):
    """`darknet detector train data/obj.data ...` as AlexeyAB's guide lays it out: images and their labels side by
    side in data/obj/, list files of paths from darknet/ (a `.list` one too), names in data/obj.names; a VOC image
    (VOCdevkit/VOC2007/JPEGImages) has its labels in VOC2007/labels/, and a COCO one in labels/train2017/, as
    Darknet's replace_image_to_label has it; the ultralytics rule would look elsewhere."""
    from yolo_attn.data.config import build_dataset, load_data_config
    from yolo_attn.data.darknet import darknet_label_path

    root = tmp_path / "darknet"
    write_jpeg(root / "data" / "obj" / "a.jpg", boxes=[(10, 10, 30, 40)])
    (root / "data" / "obj" / "a.txt").write_text("1 0.25 0.4166667 0.25 0.5\n")
    write_jpeg(root / "data" / "obj" / "images" / "b.jpg")  # beside its label for Darknet, not in labels/
    (root / "data" / "obj" / "images" / "b.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    write_jpeg(root / "VOCdevkit" / "VOC2007" / "JPEGImages" / "c.jpg")
    (root / "VOCdevkit" / "VOC2007" / "labels").mkdir(parents=True)
    (root / "VOCdevkit" / "VOC2007" / "labels" / "c.txt").write_text("0 0.5 0.5 0.25 0.25\n")
    (root / "data" / "train.txt").write_text("data/obj/a.jpg\ndata/obj/images/b.jpg\n"
                                             f"{root / 'VOCdevkit' / 'VOC2007' / 'JPEGImages' / 'c.jpg'}\n")
    (root / "data" / "valid.list").write_text("data/obj/a.jpg\n")
    (root / "data" / "obj.names").write_text("cat\ndog\n")
    data = root / "data" / "obj.data"
    data.write_text("classes = 3\ntrain  = data/train.txt\nvalid = data/valid.list\nnames = data/obj.names\n"
                    "backup = backup/\n")
    assert darknet_label_path("/x/images/train2017/1.jpg") == Path("/x/labels/train2017/1.txt")
    # a relative line has no "/JPEGImages/" to rewrite, for Darknet: its label lies beside it
    write_jpeg(root / "JPEGImages" / "d.jpg")
    (root / "JPEGImages" / "d.txt").write_text("1 0.5 0.5 0.25 0.25\n")
    (root / "data" / "valid.list").write_text("data/obj/a.jpg\nJPEGImages/d.jpg\n")

    monkeypatch.chdir(tmp_path)  # not darknet/: its paths are found from the .data file's parent folder
    cfg = load_data_config("darknet/data/obj.data")  # relative, as typed
    assert cfg["names"] == ["cat", "dog"] and cfg["root"] == str(root.resolve()) and cfg["labels"] == "darknet"
    assert "obj.data: classes=3, but" in caplog.text and "lists 2 names" in caplog.text
    train = build_dataset(cfg, "train")
    recs = {Path(r.path).name: r for r in train.records}
    assert sorted(recs) == ["a.jpg", "b.jpg", "c.jpg"]
    np.testing.assert_allclose(recs["a.jpg"].boxes, [[10, 10, 30, 40]], atol=1e-3)
    assert [recs[n].labels.tolist() for n in ("a.jpg", "b.jpg", "c.jpg")] == [[1], [0], [0]]
    val = {Path(r.path).name: r.labels.tolist() for r in build_dataset(cfg, "val").records}
    assert val == {"a.jpg": [1], "d.jpg": [1]}
    ultralytics = build_dataset(dict(cfg, labels="ultralytics"), "train")  # labels/b.txt, c.txt beside: none
    assert sum(len(r.labels) for r in ultralytics.records) == 1

    data.write_text(f"train = {root / 'data' / 'train.txt'}\nnames = data/obj.names\n")  # absolute; no valid=
    monkeypatch.chdir(tmp_path / "darknet" / "data")  # the list's relative paths are from darknet/, not from here
    cfg = load_data_config(str(data))
    assert "obj.data: no valid= line (the list file of validation images); validating on the train list" in caplog.text
    assert cfg["root"] == str(root.resolve()) and len(build_dataset(cfg, "val")) == 3
    data.write_text("train = data/missing.txt\nvalid = data/valid.list\nnames = data/obj.names\n")
    with pytest.raises(FileNotFoundError, match="obj.data: train=data/missing.txt, which is not at "):
        load_data_config(str(data))
    data.write_text("train = data/train.txt\nvalid = data/valdi.list\nnames = data/obj.names\n")  # a typo
    with pytest.raises(FileNotFoundError, match="obj.data: valid=data/valdi.list, which is not at "):
        load_data_config(str(data))
    # "./JPEGImages/..." keeps the "/" before JPEGImages in the line as written: Darknet reads labels/
    (root / "labels").mkdir()
    (root / "labels" / "d.txt").write_text("0 0.5 0.5 0.25 0.25\n")
    (root / "data" / "dot.txt").write_text("./JPEGImages/d.jpg\n")
    data.write_text("train = data/dot.txt\nvalid = data/dot.txt\nnames = data/obj.names\n")
    assert [r.labels.tolist() for r in build_dataset(load_data_config(str(data)), "train").records] == [[0]]
    with pytest.raises(ValueError, match="`labels` is 'yolov5'"):
        load_data_config({"format": "yolo", "root": str(root), "train": "data/train.txt", "val": "data/valid.list",
                          "names": ["cat", "dog"], "labels": "yolov5"})


def test_scored_splits_keep_the_annotations_as_written_and_the_train_split_cleans_them(tmp_path):
    """The VOC devkit scores an XML as written: a repeated box is a second object to find and a box past the
    edge is matched by its full extent. Training boxes are cleaned (deduplicated, clipped); a scored split keeps
    them and still reports them. With one perfect detection of the first person the devkit's AP is 0.5."""
    from yolo_attn.eval.evaluator import GroundTruth, _score

    objects = [("person", 11, 21, 60, 50, 0), ("person", 11, 21, 60, 50, 0), ("dog", 41, 11, 120, 40, 0)]
    mini_voc(tmp_path, voc_xml(80, 60, objects))
    cfg = load_data_config({"format": "voc", "root": str(tmp_path / "VOCdevkit"), "train": "VOC2007/train",
                            "val": "VOC2007/train", "names": VOC_NAMES})
    train, val = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    cleaned, written = train.get_annotation(0), val.get_annotation(0)
    assert cleaned.boxes.tolist() == [[10, 20, 60, 50], [40, 10, 80, 40]]
    assert written.boxes.tolist() == [[10, 20, 60, 50], [10, 20, 60, 50], [40, 10, 120, 40]]
    assert kinds(train) == {R.DUPLICATE: 1, R.OUT_OF_BOUNDS: 1}
    assert kinds(val) == {R.DUPLICATE_KEPT: 1, R.OUT_OF_BOUNDS_KEPT: 1}  # check_data's headers say which
    assert "scored as annotated" in str(val.problems.problems) and "clipped" in str(train.problems.problems)

    gt = GroundTruth("a", None, 60, 80, written.boxes.astype(float), written.labels, written.difficult)
    # the person found exactly, the dog by its visible part (IoU 0.5 with the written box: not a match)
    det = np.array([[10, 20, 60, 50, 0.9, 2], [40, 10, 80, 40, 0.8, 1]], np.float32)
    result = _score([gt], [det], VOC_NAMES, [0, 1, 2], [], ("voc12",), None)
    assert [c["voc12_ap50"] for c in result["classes"][1:]] == [0.0, 0.5]
