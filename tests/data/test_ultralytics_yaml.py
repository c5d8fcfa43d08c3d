"""Ultralytics data YAMLs as they are (`path`, `train`, `val`, `names` as {index: name}, `nc`, an empty `test:`):
read as format yolo by the loader the tools use, with clear errors naming the file for the bad ones."""
import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from yolo_attn.data import build_dataset, load_data_config

ROOT = Path(__file__).resolve().parents[2]
SPLITS = {"train": 3, "val": 2}  # images per split


def write_split(images: Path, labels: Path, count: int) -> None:
    """``count`` small images with one box each (class i % 2) and their YOLO label files."""
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    for i in range(count):
        image = np.full((32, 40, 3), 90, np.uint8)
        cv2.rectangle(image, (10, 8), (25, 20), (255, 255, 255), -1)
        cv2.imwrite(str(images / f"{i}.jpg"), image)
        (labels / f"{i}.txt").write_text(f"{i % 2} 0.4375 0.4375 0.4 0.4375\n")


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """``datasets/coco8`` in Ultralytics' layout (images/train, labels/train, ...) and ``datasets/rf`` in
    Roboflow's export layout (train/images, train/labels, valid/...), side by side; configs go in ``clone/``."""
    base = tmp_path_factory.mktemp("ultralytics")
    for split, count in SPLITS.items():
        write_split(base / "datasets/coco8/images" / split, base / "datasets/coco8/labels" / split, count)
    for split, count in (("train", SPLITS["train"]), ("valid", SPLITS["val"])):
        write_split(base / "datasets/rf" / split / "images", base / "datasets/rf" / split / "labels", count)
    (base / "datasets/coco8/val.txt").write_text("images/train/0.jpg\n./images/train/2.jpg\n")
    (base / "clone").mkdir()
    return base


@pytest.fixture(autouse=True)
def elsewhere(tmp_path, monkeypatch):
    """Run from an empty folder, with no Ultralytics settings, so that only the YAML's folder can hold `path`."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path / "no-ultralytics-settings"))


def write_yaml(folder: Path, text: str, name: str = "ultra.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


COCO8 = "datasets/coco8"
SPELLINGS = {
    "path relative to the YAML, names as a dict, empty test": (
        "clone", "path: ../datasets/coco8   # dataset root\ntrain: images/train\nval: images/val\n"
                 "test:                      # optional\nnames:\n  0: person\n  1: bicycle\n", COCO8, SPLITS),
    "absolute path, names as a list": (
        "clone", "path: {base}/datasets/coco8\ntrain: images/train\nval: images/val\nnames: [person, bicycle]\n",
        COCO8, SPLITS),
    "no path: the YAML's folder is the root": (
        COCO8, "train: images/train\nval: images/val\nnames: {0: person, 1: bicycle}\nnc: 2\n", COCO8, SPLITS),
    "names keys written as strings, format given by hand": (
        "clone", "format: yolo\npath: ../datasets/coco8\ntrain: images/train\nval: images/val\n"
                 "names: {'0': person, '1': bicycle}\n", COCO8, SPLITS),
    "train as a list of folders, val as a list file": (
        "clone", "path: ../datasets/coco8\ntrain: [images/train, images/val]\nval: val.txt\n"
                 "names: [person, bicycle]\ndownload: https://example.com/coco8.zip\n", COCO8, {"train": 5, "val": 2}),
    "root and path naming the same folder": (
        "clone", "root: {base}/datasets/coco8\npath: ../datasets/coco8\ntrain: images/train\nval: images/val\n"
                 "names: [person, bicycle]\n", COCO8, SPLITS),
    "Roboflow export: ../train/images beside data.yaml, nc, roboflow block": (
        "datasets/rf", "train: ../train/images\nval: ../valid/images\ntest: ../test/images\nnc: 2\n"
                       "names: ['person', 'bicycle']\nroboflow:\n  workspace: w\n  version: 1\n",
        "datasets/rf", SPLITS),
    "validation for val, as Ultralytics renames it": (
        "datasets/rf", "train: ../train/images\nvalidation: ../valid/images\nnames: [person, bicycle]\n",
        "datasets/rf", SPLITS),
}


@pytest.mark.parametrize("folder,text,root,counts", SPELLINGS.values(), ids=list(SPELLINGS))
def test_ultralytics_yaml_loads(base, folder, text, root, counts):
    config = write_yaml(base / folder, text.replace("{base}", str(base)))
    cfg = load_data_config(config)
    assert cfg["format"] == "yolo"
    assert cfg["root"] == str((base / root).resolve())
    assert cfg["names"] == ["person", "bicycle"]
    assert cfg["path"] == str(config)  # the config file, as messages and reports name it
    for split, count in counts.items():
        dataset = build_dataset(cfg, split)
        assert len(dataset) == count and sum(len(r.labels) for r in dataset.records) == count, split


def test_empty_test_is_no_test_split(base):
    config = write_yaml(base / "clone", "path: ../datasets/coco8\ntrain: images/train\nval: images/val\n"
                                        "test:   # optional\nnames: [person, bicycle]\n")
    cfg = load_data_config(config)
    assert "test" not in cfg
    with pytest.raises(KeyError, match="no split 'test'"):
        build_dataset(cfg, "test")


def test_labels_and_boxes_come_through(base):
    config = write_yaml(base / "clone", "path: ../datasets/coco8\ntrain: images/train\nval: images/val\n"
                                        "names: {0: person, 1: bicycle}\n")
    records = build_dataset(load_data_config(config), "train").records
    assert [r.labels.tolist() for r in records] == [[0], [1], [0]]
    np.testing.assert_allclose(records[0].boxes, [[9.5, 7.0, 25.5, 21.0]], atol=1e-4)


def test_nc_without_names_names_the_classes_as_ultralytics_does(base):
    config = write_yaml(base / "clone", "path: ../datasets/coco8\ntrain: images/train\nval: images/val\nnc: 2\n")
    assert load_data_config(config)["names"] == ["class_0", "class_1"]


def test_relative_path_is_taken_from_the_current_folder_first(base, tmp_path, monkeypatch):
    for split in SPLITS:
        (tmp_path / "datasets/coco8/images" / split).mkdir(parents=True)  # a second coco8, beside run/
    (tmp_path / "run").mkdir()
    config = write_yaml(base / "clone", "path: ../datasets/coco8\ntrain: images/train\nval: images/val\n"
                                        "names: [person, bicycle]\n")
    assert load_data_config(config)["root"] == str((base / COCO8).resolve())  # none from here: the YAML's
    monkeypatch.chdir(tmp_path / "run")
    assert load_data_config(config)["root"] == str((tmp_path / COCO8).resolve())  # as Ultralytics takes it


def test_relative_path_in_ultralytics_datasets_dir(base, tmp_path, monkeypatch):
    settings = tmp_path / "ultralytics-settings"
    settings.mkdir()
    (settings / "settings.json").write_text(json.dumps({"datasets_dir": str(base / "datasets")}))
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(settings))
    config = write_yaml(tmp_path, "path: coco8\ntrain: images/train\nval: images/val\nnames: [person, bicycle]\n")
    cfg = load_data_config(config)
    assert cfg["root"] == str((base / COCO8).resolve()) and len(build_dataset(cfg, "val")) == 2


def test_root_override_replaces_path(base):
    config = write_yaml(base / "clone", "path: ../datasets/nowhere\ntrain: images/train\nval: images/val\n"
                                        "names: [person, bicycle]\n", "moved.yaml")
    cfg = load_data_config(config, {"root": str(base / COCO8)})  # check_data.py --root
    assert cfg["root"] == str((base / COCO8).resolve()) and len(build_dataset(cfg, "train")) == 3


def test_a_loaded_config_loads_again(base, monkeypatch):
    config = write_yaml(base / "clone", "path: ../datasets/coco8\ntrain: images/train\nval: images/val\n"
                                        "test:\nnames: {0: person, 1: bicycle}\nnc: 2\n")
    cfg = load_data_config(config)
    again = load_data_config(cfg)  # its `path` is the config file, not a dataset folder
    assert again == cfg
    monkeypatch.chdir(base / "clone")
    relative = load_data_config(config.name)
    monkeypatch.chdir(base)  # `path` (the config file, relative) is not there from here: still the file's
    assert load_data_config(relative)["root"] == relative["root"]


BAD = {
    "nc disagrees with names": (
        "path: ../datasets/coco8\ntrain: images/train\nval: images/val\nnc: 3\nnames: [person, bicycle]\n",
        ValueError, r"`nc: 3`, but `names` has 2 classes"),
    "names with a gap": (
        "path: ../datasets/coco8\ntrain: images/train\nval: images/val\nnames: {0: person, 2: bicycle}\n",
        ValueError, r"`names` indices must be 0\.\.1 without gaps .*; 1 missing, given 0, 2"),
    "names key that is no index": (
        "path: ../datasets/coco8\ntrain: images/train\nval: images/val\nnames: {0: person, one: bicycle}\n",
        ValueError, r"`names` key 'one' is not a class index"),
    "root and path naming two folders": (
        "root: ../datasets/rf\npath: ../datasets/coco8\ntrain: images/train\nval: images/val\nnames: [a, b]\n",
        ValueError, r"`root: \.\./datasets/rf` \(.*rf\) and `path: \.\./datasets/coco8` \(.*coco8\) are two "
                    "dataset folders; give one of them"),
    "path that is nowhere": (
        "path: ../datasets/nowhere\ntrain: images/train\nval: images/val\nnames: [a, b]\ndownload: https://x/y.zip\n",
        FileNotFoundError, r"`path: \.\./datasets/nowhere` \(the dataset folder\) is not a folder; looked at "
                           r".*nowhere \(from the current folder\), .*nowhere \(from the YAML's folder\); its "
                           r"`download:` is not run here"),
    "pose dataset": (
        "path: ../datasets/coco8\ntrain: images/train\nval: images/val\nnames: [person]\nkpt_shape: [17, 3]\n",
        ValueError, r"`kpt_shape` makes this a pose \(keypoint\) dataset; this detector reads boxes only"),
    "nothing a data config has": (
        "dataset: coco8\nepochs: 3\n", ValueError, r"`format` is missing; a data config gives `format`"),
    "root without format": (
        "root: ../datasets/coco8\ntrain: images/train\nval: images/val\nnames: [a, b]\n",
        ValueError, r"`format` is missing"),
    "neither names nor nc": (
        "path: ../datasets/coco8\ntrain: images/train\nval: images/val\n",
        ValueError, r"`names` is missing \(the class names in label order; or `nc`, the number of classes\)"),
}


@pytest.mark.parametrize("text,error,message", BAD.values(), ids=list(BAD))
def test_bad_ultralytics_yaml_is_named_and_explained(base, text, error, message):
    config = write_yaml(base / "clone", text, "bad.yaml")
    with pytest.raises(error, match=message) as caught:
        load_data_config(config)
    assert str(caught.value).startswith(f"{config}: ")


def test_check_data_tool_accepts_the_ultralytics_yaml(base, monkeypatch, capsys):
    write_yaml(base / "clone", "path: ../datasets/coco8   # dataset root\ntrain: images/train\nval: images/val\n"
                               "test:                      # optional\nnames:\n  0: person\n  1: bicycle\n")
    spec = importlib.util.spec_from_file_location("check_data_tool", ROOT / "tools" / "check_data.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    monkeypatch.chdir(base / "clone")
    code = tool.main(["--data", "ultra.yaml"])  # python tools/check_data.py --data ultra.yaml
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "train: 3 images, 3 boxes" in out.out and "val: 2 images, 2 boxes" in out.out
    assert "no problems found" in out.out
