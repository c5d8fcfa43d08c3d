"""VOC, COCO and YOLO txt adapters: records, coordinate conventions, and every bad case reported."""
import io

import cv2
import numpy as np
import pytest
from PIL import Image

from yolo_attn.data import (
    BadImageError, COCODataset, VOCDataset, YOLOTxtDataset, build_dataset, load_data_config, read_image,
)
from yolo_attn.data import records as R

from .conftest import COCO_CATEGORIES, VOC_NAMES, write_jpeg


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
    # 'dog ' and the duplicate person are gone
    np.testing.assert_allclose(r2.boxes, [[4, 4, 20, 20], [49, 9, 80, 40]])
    assert r2.labels.tolist() == [2, 0] and not r2.difficult.any()
    assert (recs["000009"].height, recs["000009"].width) == (60, 80)
    for i, r in enumerate(ds.records):
        if r.image_id in ("000006", "000007", "000008"):
            with pytest.raises(BadImageError, match=r.image_id):
                ds.load_record(i)


def test_voc_missing_image_set_is_a_clear_error(voc_root):
    with pytest.raises(FileNotFoundError, match="ImageSets/Main/test.txt"):
        VOCDataset(voc_root, ["VOC2007/test"], VOC_NAMES)


# ---------------------------------------------------------------------------------------------- COCO
def test_coco_ids_crowd_background_and_bad_references(coco_root):
    ds = COCODataset(coco_root, ["val2017"], ["person", "car", "dog"])
    assert ds.category_ids == [1, 3, 7]
    recs = by_id(ds)
    assert set(recs) == {10, 11}  # 12 has no file
    a = recs[10]
    # dog [10, 5, 20, 30] xywh -> xyxy; car; person clipped; crowd, zero-area, duplicate, bad refs gone
    np.testing.assert_allclose(a.boxes, [[10, 5, 30, 35], [0, 0, 5, 5], [70, 50, 80, 60]])
    assert a.labels.tolist() == [2, 1, 0]
    assert [ds.category_ids[k] for k in a.labels] == [7, 3, 1]
    assert len(recs[11].labels) == 0  # background image kept
    k = kinds(ds)
    assert k[R.COCO_MISSING_IMAGE] == 1 and k[R.COCO_MISSING_CATEGORY] == 1 and k[R.MISSING_IMAGE] == 1
    assert k[R.OUT_OF_BOUNDS] == 1 and k[R.DEGENERATE] == 1 and k[R.DUPLICATE] == 1


def test_coco_names_from_json_and_reordered(coco_root):
    ds = COCODataset(coco_root, ["val2017"])
    assert ds.names == [c["name"] for c in COCO_CATEGORIES] and ds.category_ids == [1, 3, 7]
    ds = COCODataset(coco_root, ["val2017"], ["dog", "person", "car"])
    assert ds.category_ids == [7, 1, 3]
    assert by_id(ds)[10].labels.tolist() == [0, 2, 1]


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
    with pytest.raises(KeyError, match="test"):
        build_dataset(load_data_config(cfg_path), "test")
