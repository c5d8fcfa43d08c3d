"""Data configs: which format, where the files are, which splits, which classes.

A data config is a YAML mapping (``configs/voc.yaml``, ``configs/coco.yaml``, ``configs/shapes.yaml``)::

    format: voc | coco | yolo
    root: path of the dataset folder (``~`` and ``$VARS`` expanded; relative paths are relative to the
          current directory, else to the config file's folder)
    train: split entries, a string or a list (combined); the format's adapter says what an entry is
    val:   the same, for validation (any other key, e.g. ``test``, can be a split too)
    names: class names in label order (a list, or {index: name}); optional for coco (taken from the JSON)
    train_difficult: false   # optional: keep VOC `difficult` boxes as training targets
    embedded: shapes         # optional: this config is the generated dataset; `root` is filled in
    labels: darknet          # optional, yolo format: label files where Darknet looks (beside the images, ...)

A Darknet ``.data`` file (``train=``, ``valid=``, ``names=``) is a data config too (:mod:`yolo_attn.data.darknet`).

``load_data_config(None)`` (or ``"shapes"``) is the embedded dataset, generated on first use.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

from ..utils.yamlfile import read_yaml_mapping
from .coco import COCODataset
from .darknet import darknet_data_config
from .dataset import DetectionDataset
from .shapes import SHAPE_CLASSES, SHAPES_CONFIG, ensure_shapes_dataset
from .voc import VOCDataset
from .yolo_txt import LABEL_RULES, YOLOTxtDataset

__all__ = ["FORMATS", "build_dataset", "load_data_config"]

FORMATS = ("voc", "coco", "yolo")
ConfigSource = Union[None, str, os.PathLike, Mapping[str, Any]]


def _read_yaml(path: Path) -> Dict[str, Any]:
    return read_yaml_mapping(path, "data config", "give a YAML file, or omit it for the embedded shapes dataset",
                             "format, root, train, val, names")


def _resolve_root(root: Any, base: Optional[Path], where: str) -> str:
    if not root:
        raise ValueError(f"{where}: `root` is missing (the dataset folder)")
    path = Path(os.path.expandvars(os.path.expanduser(str(root))))
    if not path.is_absolute() and not path.exists() and base is not None and (base / path).exists():
        path = base / path
    return str(path.resolve())


def _names(names: Any, where: str) -> Optional[list]:
    if names is None:
        return None
    if isinstance(names, Mapping):  # Ultralytics style {0: a, 1: b}
        keys = sorted(int(k) for k in names)
        if keys != list(range(len(keys))):
            raise ValueError(f"{where}: `names` indices must be 0..{len(keys) - 1}")
        names = [names[k] if k in names else names[str(k)] for k in keys]
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


def load_data_config(source: ConfigSource = None, overrides: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Read and check a data config; returns a dict with at least format, root, train, val, names.

    Args:
        source: a YAML path, a mapping, or None / ``"shapes"`` for the embedded dataset (generated into the
            cache folder on first use, then reused).
        overrides: keys replacing the config's (e.g. ``{"root": "/data/VOCdevkit"}``).
    """
    base: Optional[Path] = None
    if source is None or (isinstance(source, str) and source in ("shapes", "default")):
        cfg, where = copy.deepcopy(SHAPES_CONFIG), "embedded shapes config"
    elif isinstance(source, Mapping):
        cfg, where = copy.deepcopy(dict(source)), "data config"
    elif Path(source).suffix == ".data":  # Darknet's (darknet detector train data/obj.data ...)
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such Darknet .data file")
        cfg, where = darknet_data_config(path), str(path)
        cfg["path"] = str(path)
    else:
        path = Path(source)
        cfg, where, base = _read_yaml(path), str(path), path.resolve().parent
        cfg["path"] = str(path)
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
    if fmt not in FORMATS:
        raise ValueError(f"{where}: `format` is {fmt!r}; expected one of {', '.join(FORMATS)}")
    for key in ("train", "val"):
        if cfg.get(key) is None:
            raise ValueError(f"{where}: `{key}` is missing (the {key} split entries)")
    for key, value in list(cfg.items()):
        if key in ("train", "val", "test") and not isinstance(value, list):
            cfg[key] = [value]
    cfg["root"] = _resolve_root(cfg.get("root"), base, where)
    cfg["names"] = _names(cfg.get("names"), where)
    if cfg["names"] is None and fmt != "coco":
        raise ValueError(f"{where}: `names` is missing (the class names in label order)")
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
    if fmt == "voc":
        ds: DetectionDataset = VOCDataset(cfg["root"], entries, cfg["names"])
    elif fmt == "coco":
        ds = COCODataset(cfg["root"], entries, cfg.get("names"))
    elif fmt == "yolo":
        ds = YOLOTxtDataset(cfg["root"], entries, cfg["names"], cfg.get("labels", "ultralytics"))
    else:
        raise ValueError(f"unknown data format {fmt!r}; expected one of {', '.join(FORMATS)}")
    ds.split = split
    ds.include_difficult = bool(cfg.get("train_difficult", False))
    return ds
