"""tools/check_data.py: every bad case named with its file, a summary, exit status 1; 0 when clean."""
import importlib.util
from pathlib import Path

from yolo_attn.data import records as R

from .conftest import voc_xml, write_jpeg

TOOL = Path(__file__).resolve().parents[2] / "tools" / "check_data.py"


def run_tool(argv, capsys):
    spec = importlib.util.spec_from_file_location("check_data_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    code = module.main(argv)
    return code, capsys.readouterr().out


def write_config(tmp_path, text):
    path = tmp_path / "data.yaml"
    path.write_text(text)
    return str(path)


def test_voc_check_names_every_problem(tmp_path, voc_root, capsys):
    cfg = write_config(tmp_path, f"format: voc\nroot: {voc_root}\ntrain: [VOC2007/trainval]\n"
                                 "val: [VOC2012/trainval]\nnames: [cat, dog, person]\n")
    code, out = run_tool(["--data", cfg], capsys)
    assert code == 1
    expected = {
        R.ZERO_BYTE: "000007.jpg", R.TRUNCATED: "000006.jpg", R.UNREADABLE: "000008.jpg",
        R.MISSING_IMAGE: "000004.xml", R.MISSING_ANNOTATION: "000005.jpg", R.XML_ERROR: "000003.xml",
        R.UNKNOWN_CLASS: "did you mean 'dog'", R.OUT_OF_BOUNDS: "000002.xml", R.DEGENERATE: "000002.xml",
        R.MISSING_DIFFICULT: "000002.xml", R.DUPLICATE: "000002.xml",
    }
    for kind, text in expected.items():
        section = out.split(f"{kind} (", 1)
        assert len(section) == 2, f"{kind} missing from:\n{out}"
        assert text in section[1].split("\n\n")[0], kind
    assert "summary:" in out and "train: " in out
    # the folder scan must not repeat what the split already reported
    assert out.count("000005.jpg") == 1


def test_coco_and_yolo_checks(tmp_path, coco_root, yolo_root, capsys):
    cfg = write_config(tmp_path, f"format: coco\nroot: {coco_root}\ntrain: val2017\nval: val2017\n")
    code, out = run_tool(["--data", cfg], capsys)
    assert code == 1
    for kind in (R.COCO_MISSING_IMAGE, R.COCO_MISSING_CATEGORY, R.MISSING_IMAGE, R.DUPLICATE):
        assert f"{kind} (" in out, kind
    cfg = write_config(tmp_path, f"format: yolo\nroot: {yolo_root}\ntrain: images/train\nval: images/train\n"
                                 "names: [a, b]\n")
    code, out = run_tool(["--data", cfg], capsys)
    assert code == 1
    for kind in (R.BAD_LINE, R.NOT_NORMALIZED, R.UNKNOWN_CLASS, R.OUT_OF_BOUNDS, R.ZERO_BYTE, R.ORPHAN_LABEL):
        assert f"{kind} (" in out, kind
    assert "orphan.txt" in out and "16-bit converted to RGB" in out and "EXIF orientation applied" in out


def test_yolo_check_labelimg_export_is_clean(tmp_path, capsys):
    # LabelImg writes labels/classes.txt next to the label files, and Windows tools a byte-order mark
    root = tmp_path / "yolo"
    write_jpeg(root / "images" / "train" / "a.jpg", 64, 64)
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "train" / "a.txt").write_bytes("0 0.5 0.5 0.2 0.2\r\n1 0.3 0.3 0.1 0.1\r\n".encode("utf-8-sig"))
    (root / "labels" / "train" / "classes.txt").write_text("cat\ndog\n")
    cfg = write_config(tmp_path, f"format: yolo\nroot: {root}\ntrain: [images/train]\nval: [images/train]\n"
                                 "names: [cat, dog]\n")
    code, out = run_tool(["--data", cfg], capsys)
    assert code == 0, out
    assert "train: 1 images, 2 boxes" in out
    (root / "labels" / "train" / "a.txt").write_text("inf 0.5 0.5 0.2 0.2\n")
    code, out = run_tool(["--data", cfg], capsys)
    assert code == 1 and f"{R.UNKNOWN_CLASS} (1)" in out and "a.txt: line 1" in out


def test_clean_dataset_exits_zero(tmp_path, voc_root, capsys):
    cfg = write_config(tmp_path, f"format: voc\nroot: {voc_root}\ntrain: [VOC2012/trainval]\n"
                                 "val: [VOC2012/trainval]\nnames: [cat, dog, person]\n")
    code, out = run_tool(["--data", cfg], capsys)
    assert code == 0, out
    assert "no problems found" in out


def test_a_split_whose_every_box_is_difficult_fails(tmp_path, voc_root, capsys):
    """Training leaves difficult boxes out and the VOC devkit ignores them: such a train split used to pass
    the check and then be refused by training."""
    (voc_root / "VOC2012" / "Annotations" / "2012_000001.xml").write_text(
        voc_xml(70, 50, [("person", 2, 3, 40, 45, 1), ("cat", 5, 5, 30, 30, 1)]))
    cfg = write_config(tmp_path, f"format: voc\nroot: {voc_root}\ntrain: [VOC2012/trainval]\n"
                                 "val: [VOC2012/trainval]\nnames: [cat, dog, person]\n")
    code, out = run_tool(["--data", cfg], capsys)
    assert code == 1, out
    assert "split whose every box is difficult (2):" in out and "split without one box" not in out
    assert "split train: 1 images and 2 boxes, every one difficult; training leaves difficult boxes out" in out
    assert "`train_difficult: true`" in out and "split val: 1 images and 2 boxes, every one difficult; the VOC " \
        "devkit's mAP ignores difficult boxes: there is nothing to score" in out
    cfg = write_config(tmp_path, f"format: voc\nroot: {voc_root}\ntrain: [VOC2012/trainval]\n"
                                 "val: [VOC2012/trainval]\nnames: [cat, dog, person]\ntrain_difficult: true\n")
    code, out = run_tool(["--data", cfg], capsys)  # trained on now; still not scored
    assert "split train: 1 images and 2 boxes" not in out and "split val: 1 images and 2 boxes" in out, out
    cfg = write_config(tmp_path, f"format: voc\nroot: {voc_root}\ntrain: [VOC2007/clean]\n"
                                 "val: [VOC2007/clean]\ntest: [VOC2012/trainval]\nnames: [cat, dog, person]\n")
    code, out = run_tool(["--data", cfg, "--split", "train", "test"], capsys)  # a test split is not judged
    assert "every one difficult" not in out, out


def test_a_coco_split_of_crowd_regions_only_fails(tmp_path, capsys):
    import json

    root = tmp_path / "coco"
    write_jpeg(root / "train2017" / "a.jpg", 60, 80)
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_train2017.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "height": 60, "width": 80}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 80, 60], "iscrowd": 1}],
        "categories": [{"id": 1, "name": "person"}]}))
    cfg = write_config(tmp_path, f"format: coco\nroot: {root}\ntrain: train2017\nval: train2017\n")
    code, out = run_tool(["--data", cfg], capsys)
    assert code == 1, out
    assert "split train: 1 images and 1 boxes, every one a crowd region (iscrowd 1); crowd regions are never " \
        "training targets: training refuses it" in out
    assert "split val: 1 images and 1 boxes, every one a crowd region (iscrowd 1); pycocotools ignores" in out


def test_unreadable_config_exits_two(tmp_path, capsys):
    code = run_tool(["--data", str(tmp_path / "nope.yaml")], capsys)[0]
    assert code == 2


def test_darknet_data_file_check(tmp_path, capsys, monkeypatch):
    """Darknet's layout: train and valid images with their labels side by side in data/obj/, the list files in
    the same folder: clean; a label with no image beside it is the only orphan."""
    root = tmp_path / "darknet"
    obj = root / "data" / "obj"
    for name in ("a", "b", "c"):
        write_jpeg(obj / f"{name}.jpg", 64, 64)
        (obj / f"{name}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (obj / "train.txt").write_text("data/obj/a.jpg\ndata/obj/b.jpg\n")
    (obj / "valid.txt").write_text("data/obj/c.jpg\n")
    (root / "data" / "obj.names").write_text("cat\n")
    (root / "data" / "obj.data").write_text("classes=1\ntrain=data/obj/train.txt\nvalid=data/obj/valid.txt\n"
                                            "names=data/obj.names\n")
    monkeypatch.chdir(root)
    code, out = run_tool(["--data", "data/obj.data"], capsys)
    assert code == 0, out
    assert "train: 2 images, 2 boxes" in out and "val: 1 images, 1 boxes" in out
    (obj / "stray.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    code, out = run_tool(["--data", "data/obj.data"], capsys)
    assert code == 1 and f"{R.ORPHAN_LABEL} (1)" in out and "stray.txt" in out


def test_darknet_voc_layout_check(tmp_path, capsys, monkeypatch):
    """Darknet's voc_label.py layout: VOC2007/JPEGImages/*.jpg with their labels in VOC2007/labels/, a list of
    some of the images: no label is an orphan (the other images' labels neither); a stray one is."""
    voc = tmp_path / "VOCdevkit" / "VOC2007"
    (voc / "labels").mkdir(parents=True)
    for name in ("1", "2", "3"):
        write_jpeg(voc / "JPEGImages" / f"{name}.jpg", 64, 64)
        (voc / "labels" / f"{name}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "train.txt").write_text(f"{voc / 'JPEGImages' / '1.jpg'}\n{voc / 'JPEGImages' / '2.jpg'}\n")
    (tmp_path / "voc.names").write_text("cat\n")
    (tmp_path / "voc.data").write_text("train=train.txt\nvalid=train.txt\nnames=voc.names\n")
    monkeypatch.chdir(tmp_path)
    code, out = run_tool(["--data", "voc.data"], capsys)
    assert code == 0, out
    (voc / "labels" / "stray.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    code, out = run_tool(["--data", "voc.data"], capsys)
    assert code == 1 and f"{R.ORPHAN_LABEL} (1)" in out and "stray.txt" in out


def test_darknet_relative_voc_lines_check(tmp_path, capsys, monkeypatch):
    """Relative lines `JPEGImages/1.jpg` (no "/JPEGImages/" to rewrite: Darknet reads the label beside the image),
    train and valid listing different images of the folder: none is an orphan in either split."""
    for name in ("1", "2", "3"):
        write_jpeg(tmp_path / "JPEGImages" / f"{name}.jpg", 64, 64)
        (tmp_path / "JPEGImages" / f"{name}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "train.txt").write_text("JPEGImages/1.jpg\nJPEGImages/2.jpg\n")
    (tmp_path / "valid.txt").write_text("JPEGImages/3.jpg\n")
    (tmp_path / "voc.names").write_text("cat\n")
    (tmp_path / "voc.data").write_text("train=train.txt\nvalid=valid.txt\nnames=voc.names\n")
    monkeypatch.chdir(tmp_path)
    code, out = run_tool(["--data", "voc.data"], capsys)
    assert code == 0, out
    assert "train: 2 images, 2 boxes" in out and "val: 1 images, 1 boxes" in out


def yolo_images(root, names=("a", "b", "c")):
    for name in names:
        write_jpeg(root / "images" / "train" / f"{name}.jpg", 64, 64)


def test_yolo_split_without_label_files_fails(tmp_path, capsys):
    """No labels/ folder at all: each image is listed as a background image (not a problem by itself), and the
    split with not one box is a problem naming where the labels were looked for, as training refuses it."""
    root = tmp_path / "yolo"
    yolo_images(root)
    cfg = write_config(tmp_path, f"format: yolo\nroot: {root}\ntrain: images/train\nval: images/train\n"
                                 "names: [cat]\n")
    code, out = run_tool(["--data", cfg], capsys)
    assert code == 1, out
    assert f"{R.MISSING_LABEL}, not a problem (3):" in out
    assert str(root / "labels" / "train" / "a.txt") in out
    assert "split train: 3 images and not one box: 3 have no label file" in out and "training refuses it" in out
    assert "(3 without a label file)" in out
    # one labelled image: the others are background images, and the check passes
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    code, out = run_tool(["--data", cfg], capsys)
    assert code == 0, out
    assert f"{R.MISSING_LABEL}, not a problem (2):" in out and "no problems found" in out


def test_darknet_list_of_images_folder_without_labels_fails(tmp_path, capsys, monkeypatch):
    """A Darknet list of .../images/train/*.jpg with the labels in .../labels/train: Darknet's rule looks beside
    the images, finds nothing, and the check says so instead of passing."""
    root = tmp_path / "set"
    yolo_images(root, ("a", "b"))
    (root / "labels" / "train").mkdir(parents=True)
    for name in ("a", "b"):
        (root / "labels" / "train" / f"{name}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "train.txt").write_text("".join(f"{root / 'images' / 'train' / n}.jpg\n" for n in ("a", "b")))
    (tmp_path / "obj.names").write_text("cat\n")
    (tmp_path / "obj.data").write_text("train=train.txt\nvalid=train.txt\nnames=obj.names\n")
    monkeypatch.chdir(tmp_path)
    code, out = run_tool(["--data", "obj.data"], capsys)
    assert code == 1, out
    assert "split train: 2 images and not one box" in out and str(root / "images" / "train" / "a.txt") in out


def test_image_listed_twice_is_reported(tmp_path, voc_root, capsys):
    (voc_root / "VOC2012" / "ImageSets" / "Main" / "trainval.txt").write_text("2012_000001\n2012_000001\n")
    cfg = write_config(tmp_path, f"format: voc\nroot: {voc_root}\ntrain: [VOC2012/trainval]\n"
                                 "val: [VOC2012/trainval]\nnames: [cat, dog, person]\n")
    code, out = run_tool(["--data", cfg], capsys)
    assert code == 1, out
    assert f"{R.LISTED_TWICE} (2):" in out and "2012_000001.jpg: listed 2 times in the train split" in out
    root = tmp_path / "yolo"
    yolo_images(root, ("a", "b"))
    (root / "labels" / "train").mkdir(parents=True)
    for name in ("a", "b"):
        (root / "labels" / "train" / f"{name}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "train.txt").write_text("images/train/a.jpg\nimages/train/b.jpg\n./images/train/a.jpg\n")
    cfg = write_config(tmp_path, f"format: yolo\nroot: {root}\ntrain: train.txt\nval: images/train\n"
                                 "names: [cat]\n")
    code, out = run_tool(["--data", cfg], capsys)
    assert code == 1, out
    assert f"{R.LISTED_TWICE} (1):" in out and "a.jpg: listed 2 times in the train split" in out


def test_split_option_requires_only_that_split(tmp_path, capsys):
    root = tmp_path / "yolo"
    yolo_images(root, ("a",))
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    cfg = write_config(tmp_path, f"format: yolo\nroot: {root}\ntrain: images/train\nnames: [cat]\n")
    code, out = run_tool(["--data", cfg, "--split", "train"], capsys)
    assert code == 0, out
    assert "train: 1 images, 1 boxes" in out and "val:" not in out
    code = run_tool(["--data", cfg], capsys)[0]  # checking every split: the missing one is still an error
    assert code == 2


def test_yolo_nan_value_is_non_finite(tmp_path, capsys):
    root = tmp_path / "yolo"
    yolo_images(root, ("a",))
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n0 nan 0.5 0.2 0.2\n")
    cfg = write_config(tmp_path, f"format: yolo\nroot: {root}\ntrain: images/train\nval: images/train\n"
                                 "names: [cat]\n")
    code, out = run_tool(["--data", cfg], capsys)
    assert code == 1, out
    assert "line 2 '0 nan 0.5 0.2 0.2': non-finite value (nan); skipped" in out and "pixel coordinates" not in out
