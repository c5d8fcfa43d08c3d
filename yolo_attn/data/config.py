"""Data configs: which format, where the files are, which splits, which classes.

A data config is a YAML mapping (``configs/voc.yaml``, ``configs/coco.yaml``, ``configs/shapes.yaml``)::

    format: voc | coco | yolo
    root: path of the dataset folder (``~`` and ``$VARS`` expanded; relative paths are relative to the
          current directory, else to the config file's folder)
    train: split entries, a string or a list (combined); the format's adapter says what an entry is
    val:   the same, for validation (any other key, e.g. ``test``, can be a split too; an empty one is none)
    names: class names in label order (a list, or {index: name}); optional for coco (taken from the JSON)
    nc: optional, the number of classes: checked against ``names`` (yolo without names: class_0, class_1, ...)
    train_difficult: false   # optional: keep VOC `difficult` boxes as training targets
    embedded: shapes         # optional: this config is the generated dataset; `root` is filled in
    labels: darknet          # optional, yolo format: label files where Darknet looks (beside the images, ...)

A Darknet ``.data`` file (``train=``, ``valid=``, ``names=``) is a data config too (:mod:`yolo_attn.data.darknet`),
and so is an Ultralytics data YAML as it is: without ``format`` and ``root``, a config of ``path``, ``train``,
``val``, ``names`` / ``nc`` is format yolo. Its ``path`` is the dataset root (relative: from the current folder,
else the YAML's, else Ultralytics' ``datasets_dir`` setting); without ``path``, the YAML's folder. As Ultralytics,
an entry ``../train/images`` missing from the root but inside it (Roboflow's exports) is taken from inside.
Keys of other tasks (``kpt_shape``: pose) are refused; ``download`` is not run.

``load_data_config(None)`` (or ``"shapes"``) is the embedded dataset, generated on first use.
"""
from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

from ..utils.yamlfile import read_yaml_mapping
from .coco import COCODataset
from .darknet import darknet_data_config
from .dataset import DetectionDataset
from .records import LOGGER
from .shapes import SHAPE_CLASSES, SHAPES_CONFIG, ensure_shapes_dataset
from .voc import VOCDataset
from .yolo_txt import LABEL_RULES, YOLOTxtDataset

__all__ = ["FORMATS", "build_dataset", "load_data_config"]

FORMATS = ("voc", "coco", "yolo")
ConfigSource = Union[None, str, os.PathLike, Mapping[str, Any]]
ULTRALYTICS_KEYS = ("train", "val", "names", "nc")  # without `format` and `root` (or with `path`): Ultralytics'
POSE_KEYS = ("kpt_shape", "flip_idx")  # Ultralytics' keypoint datasets: label lines this detector cannot read


def _read_yaml(path: Path) -> Dict[str, Any]:
    return read_yaml_mapping(path, "data config", "give a YAML file, or omit it for the embedded shapes dataset",
                             "format, root, train, val, names")


def _resolve_root(root: Any, base: Optional[Path], where: str) -> str:
    if not root:
        raise ValueError(f"{where}: `root` is missing (the dataset folder)")
    path = Path(os.path.expandvars(os.path.expanduser(str(root))))
    if not path.is_absolute() and not path.exists() and base is not None and (base / path).exists():
        path = base / path
    if not path.is_dir():  # here, not at each split's first entry
        looked = f" (looked in the current folder and in {base})" if base is not None and not path.is_absolute() else ""
        raise FileNotFoundError(f"{where}: `root: {root}` (the dataset folder) is not a folder{looked}")
    return str(path.resolve())


def _names(names: Any, where: str) -> Optional[list]:
    if names is None:
        return None
    if isinstance(names, Mapping):  # Ultralytics style {0: a, 1: b}
        by_index: Dict[int, Any] = {}
        for key, name in names.items():
            if isinstance(key, bool) or not (isinstance(key, int) or (isinstance(key, str) and key.isdigit())):
                raise ValueError(f"{where}: `names` key {key!r} is not a class index (0, 1, 2, ...)")
            if int(key) in by_index:
                raise ValueError(f"{where}: `names` gives class {int(key)} twice")
            by_index[int(key)] = name
        missing = sorted(set(range(len(by_index))) - set(by_index))
        if missing:
            raise ValueError(f"{where}: `names` indices must be 0..{len(by_index) - 1} without gaps (a label's class "
                             f"is its index); {', '.join(map(str, missing))} missing, given "
                             f"{', '.join(map(str, sorted(by_index)))}")
        names = [by_index[i] for i in range(len(by_index))]
    if not isinstance(names, (list, tuple)):
        raise ValueError(f"{where}: `names` must be a list of class names")
    for i, n in enumerate(names):
        if isinstance(n, bool):
            raise ValueError(f"{where}: class {i} of `names` is the boolean {n}: YAML reads yes/no, on/off and "
                             f"true/false so; quote the name (\"{'yes' if n else 'no'}\")")
        if not isinstance(n, (str, int, float)):
            raise ValueError(f"{where}: class {i} of `names` is {n!r}, not a class name")
    names = [str(n) for n in names]  # digits written unquoted ([0, 1, ..., 9]) are names too
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: `names` has duplicates")
    return list(names)


def _ultralytics_datasets_dir() -> Optional[Path]:
    """Ultralytics' ``datasets_dir`` setting, where its settings file holds one (Ultralytics takes a relative
    ``path`` from there when the current folder has none)."""
    if os.environ.get("YOLO_CONFIG_DIR"):
        folder = Path(os.environ["YOLO_CONFIG_DIR"])
    elif sys.platform == "win32":
        folder = Path.home() / "AppData" / "Roaming" / "Ultralytics"
    elif sys.platform == "darwin":
        folder = Path.home() / "Library" / "Application Support" / "Ultralytics"
    else:
        folder = Path.home() / ".config" / "Ultralytics"
    try:
        settings = json.loads((folder / "settings.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = settings.get("datasets_dir") if isinstance(settings, dict) else None
    return Path(value) if isinstance(value, str) and value else None


def _find_dataset_path(given: Any, base: Optional[Path], where: str, download: bool) -> Path:
    """The folder of an Ultralytics ``path:``; a relative one from the current folder, else the YAML's folder,
    else Ultralytics' ``datasets_dir``."""
    path = Path(os.path.expandvars(os.path.expanduser(str(given))))
    if path.is_absolute():
        places = [("", path)]
    else:
        folders = [("the current folder", Path.cwd()), ("the YAML's folder", base),
                   ("Ultralytics' datasets_dir", _ultralytics_datasets_dir())]
        places = [(origin, folder / path) for origin, folder in folders if folder is not None]
    for _, place in places:
        if place.is_dir():
            return place.resolve()
    looked = ", ".join(f"{place.resolve()}{f' (from {origin})' if origin else ''}" for origin, place in places)
    note = "; its `download:` is not run here: fetch the dataset first" if download else ""
    raise FileNotFoundError(f"{where}: `path: {given}` (the dataset folder) is not a folder; looked at {looked}"
                            f"{note}; or give the folder's absolute path")


def _dataset_root(cfg: Mapping[str, Any], dataset_path: Any, base: Optional[Path], where: str) -> str:
    """The dataset folder: ``root``, or Ultralytics' ``path`` (both: the same folder), or for an Ultralytics
    config without either, the YAML's folder."""
    if not dataset_path:
        if not cfg.get("root") and cfg["format"] == "yolo" and base is not None:
            return str(base)
        return _resolve_root(cfg.get("root"), base, where)
    found = _find_dataset_path(dataset_path, base, where, cfg.get("download") is not None)
    if cfg.get("root"):
        root = Path(_resolve_root(cfg["root"], base, where))
        if root != found:
            raise ValueError(f"{where}: `root: {cfg['root']}` ({root}) and `path: {dataset_path}` ({found}) are two "
                             "dataset folders; give one of them")
    return str(found)


def _inside_root(root: str, entry: Any) -> Any:
    """An entry ``../train/images`` that is not there from the root but is inside it is the inside one, as
    Ultralytics takes it: Roboflow's exports put data.yaml beside ``train/`` and write ``../train/images``."""
    if (isinstance(entry, str) and entry.startswith("../") and not (Path(root) / entry).exists()
            and (Path(root) / entry[3:]).exists()):
        return entry[3:]
    return entry


def _class_count(cfg: Mapping[str, Any], names: Optional[list], where: str) -> Optional[list]:
    """``names`` checked against ``nc`` (Ultralytics' class count); for yolo without names, class_0, class_1, ..."""
    nc = cfg.get("nc")
    if nc is None:
        return names
    if isinstance(nc, bool) or not isinstance(nc, int) or nc < 1:
        raise ValueError(f"{where}: `nc` is {nc!r}; it is the number of classes, a positive integer")
    if names is None:
        return [f"class_{i}" for i in range(nc)] if cfg["format"] == "yolo" else None  # Ultralytics' names
    if len(names) != nc:
        raise ValueError(f"{where}: `nc: {nc}`, but `names` has {len(names)} classes; make them agree (or leave "
                         "out `nc`)")
    return names


def load_data_config(source: ConfigSource = None, overrides: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Read and check a data config; returns a dict with at least format, root, train, val, names.

    Args:
        source: a YAML path, a mapping, or None / ``"shapes"`` for the embedded dataset (generated into the
            cache folder on first use, then reused).
        overrides: keys replacing the config's (e.g. ``{"root": "/data/VOCdevkit"}``).
    """
    base: Optional[Path] = None
    dataset_path: Any = None  # Ultralytics' `path:`, the dataset folder
    if source is None or (isinstance(source, str) and source in ("shapes", "default")):
        cfg, where = copy.deepcopy(SHAPES_CONFIG), "embedded shapes config"
    elif isinstance(source, Mapping):
        cfg, where = copy.deepcopy(dict(source)), "data config"
        if "path" in cfg and not cfg.get("root"):  # with a root, `path` is a loaded config's own file
            dataset_path = cfg.pop("path")
    elif Path(source).suffix == ".data":  # Darknet's (darknet detector train data/obj.data ...)
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such Darknet .data file")
        cfg, where = darknet_data_config(path), str(path)
        cfg["path"] = str(path)
    else:
        path = Path(source)
        cfg, where, base = _read_yaml(path), str(path), path.resolve().parent
        dataset_path = cfg.pop("path", None)
        cfg["path"] = str(path)  # from here on, the config file (messages name it)
    if "val" not in cfg and "validation" in cfg:  # as Ultralytics reads it (Roboflow's exports write it)
        LOGGER.warning("%s: `validation` read as `val`", where)
        cfg["val"] = cfg.pop("validation")
    ultralytics_keys = bool(dataset_path) or (not cfg.get("root") and any(k in cfg for k in ULTRALYTICS_KEYS))
    if (overrides or {}).get("root"):
        dataset_path = None  # a root given in its place (--root)
    cfg.update(overrides or {})
    if cfg.get("embedded") is not None:
        if cfg["embedded"] != "shapes":
            raise ValueError(f"{where}: unknown embedded dataset {cfg['embedded']!r} (known: shapes)")
        if list(cfg.get("names") or SHAPE_CLASSES) != list(SHAPE_CLASSES):
            raise ValueError(f"{where}: the shapes dataset's names are fixed: {list(SHAPE_CLASSES)}")
        for key in ("format", "train", "val", "names"):
            cfg.setdefault(key, copy.deepcopy(SHAPES_CONFIG[key]))
        if not cfg.get("root"):
            cfg["root"] = str(ensure_shapes_dataset(int(cfg.get("seed", 0)), int(cfg.get("num_train", 2000)),
                                                    int(cfg.get("num_val", 300)), cfg.get("cache")))
    fmt = cfg.get("format")
    if fmt is None and ultralytics_keys:
        fmt = cfg["format"] = "yolo"  # an Ultralytics data YAML: it has no `format`, its labels are YOLO txt
        LOGGER.info("%s: read as an Ultralytics data YAML (format yolo)", where)
    if fmt is None:
        raise ValueError(f"{where}: `format` is missing; a data config gives `format` ({', '.join(FORMATS)}), "
                         "`root`, `train`, `val` and `names` (an Ultralytics data YAML, read as yolo, gives `path`, "
                         "`train`, `val` and `names` and no `root`)")
    if fmt not in FORMATS:
        raise ValueError(f"{where}: `format` is {fmt!r}; expected one of {', '.join(FORMATS)}")
    for key in POSE_KEYS:
        if cfg.get(key) is not None:
            raise ValueError(f"{where}: `{key}` makes this a pose (keypoint) dataset; this detector reads boxes only "
                             "(label lines `class cx cy w h`): give it a detection copy of the dataset")
    if cfg.get("channels") not in (None, 3):
        raise ValueError(f"{where}: `channels: {cfg['channels']}`; this detector reads 3-channel (RGB) images")
    for key in ("train", "val"):
        if cfg.get(key) is None:
            raise ValueError(f"{where}: `{key}` is missing (the {key} split entries)")
    if "test" in cfg and not cfg["test"]:
        del cfg["test"]  # `test:` left empty: no test split, as in Ultralytics
    for key, value in list(cfg.items()):
        if key in ("train", "val", "test") and not isinstance(value, list):
            cfg[key] = [value]
    cfg["root"] = _dataset_root(cfg, dataset_path, base, where)
    if fmt == "yolo":
        for key in ("train", "val", "test"):
            if key in cfg:
                cfg[key] = [_inside_root(cfg["root"], entry) for entry in cfg[key]]
    cfg["names"] = _class_count(cfg, _names(cfg.get("names"), where), where)
    if cfg["names"] is None and fmt != "coco":
        raise ValueError(f"{where}: `names` is missing (the class names in label order"
                         f"{'; or `nc`, the number of classes' if fmt == 'yolo' else ''})")
    cfg["labels"] = cfg.get("labels") or "ultralytics"
    if not isinstance(cfg["labels"], str) or cfg["labels"] not in LABEL_RULES or (
            cfg["labels"] != "ultralytics" and fmt != "yolo"):
        raise ValueError(f"{where}: `labels` is {cfg['labels']!r}; for the yolo format: "
                         f"{' or '.join(LABEL_RULES)} (where each image's label file is)")
    cfg.setdefault("train_difficult", False)
    return cfg


def build_dataset(cfg: Mapping[str, Any], split: str = "val") -> DetectionDataset:
    """The dataset of one split (``"train"``, ``"val"``, or any other list-valued key of the config)."""
    if split not in cfg or not cfg[split]:
        raise KeyError(f"the data config has no split {split!r} (it has: "
                       + ", ".join(k for k in ("train", "val", "test") if cfg.get(k)) + ")")
    entries = cfg[split] if isinstance(cfg[split], (list, tuple)) else [cfg[split]]
    fmt = cfg["format"]
    # Splits other than train are scored, by the VOC devkit's and pycocotools' rules, which take the
    # annotations as written: their duplicate and out-of-image boxes are reported but kept. YOLO labels are
    # cleaned in every split, as Ultralytics validates them.
    as_annotated = split != "train"
    if fmt == "voc":
        ds: DetectionDataset = VOCDataset(cfg["root"], entries, cfg["names"], as_annotated)
    elif fmt == "coco":
        ds = COCODataset(cfg["root"], entries, cfg.get("names"), as_annotated)
    elif fmt == "yolo":
        ds = YOLOTxtDataset(cfg["root"], entries, cfg["names"], cfg.get("labels", "ultralytics"))
    else:
        raise ValueError(f"unknown data format {fmt!r}; expected one of {', '.join(FORMATS)}")
    ds.split = split
    # COCO's difficult boxes are its crowd regions, never targets (as in COCO-trained detectors)
    ds.include_difficult = bool(cfg.get("train_difficult", False)) and fmt != "coco"
    return ds
