"""Darknet's dataset files: the ``.data`` file (``darknet detector train data/obj.data ...``) and where Darknet
looks for an image's label file.

A ``.data`` file is ``key = value`` lines: ``train`` and ``valid`` (list files, one image path a line),
``names`` (the class names, one a line), ``classes``, ``backup``. Darknet opens every relative path from the
folder it runs in (its root, which holds ``data/`` and ``cfg/``); here a relative path is taken from the current
folder when it is there, else from the ``.data`` file's parent folder (``darknet/data/obj.data`` -> ``darknet/``),
else from the ``.data`` file's own folder. The images' label files are YOLO txt (``class cx cy w h``,
normalized), found by Darknet's rule (:func:`darknet_label_path`).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Tuple, Union

__all__ = ["darknet_data_config", "darknet_data_names", "darknet_label_path", "read_darknet_options"]

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
_DROPPED = str.maketrans("", "", " \t\r\n")  # what Darknet's strip() removes
# Darknet's replace_image_to_label (src/utils.c), in its order; each replaces the first occurrence only
_LABEL_FOLDERS = (("/images/train2017/", "/labels/train2017/"), ("/images/val2017/", "/labels/val2017/"),
                  ("/JPEGImages/", "/labels/"), ("/images/train2014/", "/labels/train2014/"),
                  ("/images/val2014/", "/labels/val2014/"))


def read_darknet_options(path: PathLike) -> Dict[str, str]:
    """The ``key=value`` lines of a Darknet file without sections (a ``.data`` file), read as ``read_data_cfg``
    reads them: spaces dropped, comment lines skipped, other lines without ``=`` skipped, the first of a key
    given twice taken (``option_find``)."""
    text = Path(path).read_text(encoding="utf-8-sig", errors="replace")
    if "\0" in text:
        raise ValueError(f"{path}: not a text file (it holds NUL bytes)")
    options: Dict[str, str] = {}
    for raw in text.split("\n"):
        line = raw.translate(_DROPPED)
        if line and line[0] not in "#;" and "=" in line:
            key, value = line.split("=", 1)
            options.setdefault(key, value)
    return options


def _roots(data_file: Path) -> List[Path]:
    """Where Darknet may have run from, most likely first: here, the .data file's parent folder, its folder."""
    return list(dict.fromkeys([Path.cwd(), data_file.parent.parent, data_file.parent]))


def _find(data_file: Path, options: Dict[str, str], key: str, what: str) -> Tuple[Path, Path]:
    """(root, file) for the file ``key`` names: the first root that holds it (see the module docstring); an
    absolute path has the first root."""
    if not options.get(key):
        raise ValueError(f"{data_file}: no {key}= line ({what})")
    given = Path(options[key])
    tried = [(root, given if given.is_absolute() else root / given) for root in _roots(data_file)]
    found = next(((root, p) for root, p in tried if p.is_file()), None)
    if found is None:
        where = " nor ".join(dict.fromkeys(str(p) for _, p in tried))
        raise FileNotFoundError(f"{data_file}: {key}={given}, which is not at {where}")
    return found


def darknet_data_names(data_file: PathLike) -> Path:
    """The ``.names`` file a Darknet ``.data`` file names (``names=``)."""
    data_file = Path(data_file)
    return _find(data_file, read_darknet_options(data_file), "names", "the class-names file")[1]


def darknet_data_config(data_file: PathLike) -> Dict[str, Any]:
    """A data config (see :mod:`yolo_attn.data.config`) for a Darknet ``.data`` file: YOLO txt labels found by
    Darknet's rule, the ``train`` and ``valid`` list files (no ``valid=`` line: the train list, as Darknet's
    training takes it), ``names``. The root, from which the lists' relative image paths are taken as Darknet takes
    them from where it runs, is the first of the candidate folders that holds one of the first of them."""
    from ..utils.checkpoint import read_class_names
    from .yolo_txt import read_list_file

    data_file = Path(data_file)
    options = read_darknet_options(data_file)
    found_from, train = _find(data_file, options, "train", "the list file of training images")
    try:
        _, valid = _find(data_file, options, "valid", "the list file of validation images")
    except ValueError as e:  # no valid= line; one naming a missing file is an error, as for Darknet's -map
        log.warning("%s; validating on the train list, as Darknet does", e)
        valid = train
    _, names_file = _find(data_file, options, "names", "the class-names file")
    names = read_class_names(names_file)
    classes = options.get("classes", "")
    if classes.isdigit() and int(classes) != len(names):
        log.warning("%s: classes=%s, but %s lists %d names; the names are taken", data_file, classes, names_file,
                    len(names))
    relative = [line for key, listed in (("train", train), ("valid", valid)) for line in read_list_file(listed, key)
                if not Path(line).is_absolute()][:20]
    root = next((r for r in _roots(data_file) if any((r / line).is_file() for line in relative)), None)
    if root is None:
        if relative:
            log.warning("%s: none of the lists' first relative image paths (%s, ...) is found from %s", data_file,
                        relative[0], " or ".join(map(str, _roots(data_file))))
        root = found_from
    return {"format": "yolo", "labels": "darknet", "root": str(root.resolve()), "train": [str(train.resolve())],
            "val": [str(valid.resolve())], "names": names}


def darknet_label_path(image_path: PathLike) -> Path:
    """The label file Darknet reads for an image (``replace_image_to_label``): ``/JPEGImages/`` -> ``/labels/``
    and COCO's ``/images/train2017/`` (val2017, train2014, val2014) -> ``/labels/...``, each once, then the
    extension -> ``.txt``; in every other layout the label file lies beside the image."""
    # a list's line as written (Path would drop a leading "./", and with it the "/" before JPEGImages)
    text = image_path if isinstance(image_path, str) else Path(image_path).as_posix()
    for folder, labels in _LABEL_FOLDERS:
        text = text.replace(folder, labels, 1)
    return Path(text).with_suffix(".txt")
