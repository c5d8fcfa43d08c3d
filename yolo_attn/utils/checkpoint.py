"""Checkpoints: atomic save, safe load, and building a ready model from any supported weights file.

Our checkpoint is a plain dict (loadable with ``weights_only=True``)::

    {
      "meta": {"format": "yolo_attn", "version": 2,
               "model": YoloV4Tiny.config(),          # num_classes, attention, attention_kw, anchors, masks
               "names": [...], "img_size": 416, "scale_x_y": 1.05, "source": "yolo_attn"},
      "model": state_dict, "ema": state_dict or None,  # EMA weights are the ones used when present
      "config": {...}, "epoch": int, ...                # training state (engine), optional
    }
"""
from __future__ import annotations

import io
import logging
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch

from ..data.letterbox import check_resize
from ..models import YoloV4Tiny, build_model
from ..models.decode import check_nms
from .paths import write_atomic

__all__ = [
    "CHECKPOINT_FORMAT",
    "is_our_checkpoint",
    "load_checkpoint",
    "load_model",
    "make_meta",
    "meta_input_shape",
    "meta_nms",
    "meta_resize",
    "warn_names_unused",
    "missing_weights_message",
    "model_from_checkpoint",
    "read_class_names",
    "save_checkpoint",
    "with_pipeline",
]

CHECKPOINT_FORMAT = "yolo_attn"
# 2: a Darknet conversion's nms "iou" is our IoU NMS; version 1 wrote "iou" for Darknet's default (see meta_nms)
META_VERSION = 2
log = logging.getLogger(__name__)
PathLike = Union[str, os.PathLike]


def is_our_checkpoint(obj: Any) -> bool:
    """Whether a loaded file is a checkpoint this project wrote (its ``meta`` names our format)."""
    meta = obj.get("meta") if isinstance(obj, dict) else None
    return isinstance(meta, dict) and meta.get("format") == CHECKPOINT_FORMAT


def save_checkpoint(obj: Dict[str, Any], path: PathLike) -> None:
    """``torch.save`` through a temp file and a rename: a kill never leaves a torn file."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    write_atomic(path, buf.getvalue())


def missing_weights_message(path: Optional[PathLike]) -> str:
    """One line telling a user without weights how to get some."""
    what = "no weights given (--weights)" if path is None else f"{path}: no such weights file"
    return (f"{what}. Get weights by training (`python tools/train.py`) or by converting Darknet or port "
            f"weights (`python tools/convert.py --from darknet|port --weights FILE --classes NAMES --out model.pt`)")


# torch.save's files: a zip archive (since torch 1.6), or a bare pickle (protocol 2+ starts with the PROTO opcode)
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")
_IMAGE_MAGIC = ((b"\xff\xd8\xff", "a JPEG image"), (b"\x89PNG", "a PNG image"))  # a --source given as weights
_EMPTY = "an empty file"
_ACCEPTED_WEIGHTS = ("give our checkpoint (.pt), Darknet .weights or a port state dict (.pth); predict and eval also "
                     "run .onnx and OpenVINO .xml exports")


def _not_torch_kind(path: Path) -> Optional[str]:
    """What the file at ``path`` reads as ("a JPEG image", "text", "unknown data", ...), when its first bytes
    show it is no file torch.save writes; None when it may be one (torch's own error then says what is wrong)."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return None
    if head.startswith(_TORCH_MAGIC):
        return None
    if not head:
        return _EMPTY
    image = next((kind for magic, kind in _IMAGE_MAGIC if head.startswith(magic)), None)
    if image is not None:
        return image
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n").lower()
    whole = text[:-4] if len(head) == 512 else text  # the last character may be cut in two at 512 bytes
    if "\ufffd" in whole or any(ord(c) < 32 and c not in "\t\n\r\f" for c in text):
        return "unknown data"
    if text.startswith("version https://git-lfs"):  # a clone without git lfs: the pointer, not the weights
        return "a Git LFS pointer, not the file itself: git lfs pull fetches it"
    if text.startswith(("<!doctype html", "<html")):
        return "an HTML page: a download that fetched a web page, not the file"
    return "text"


def load_checkpoint(path: PathLike, mmap: bool = False) -> Any:
    """Load a torch file as data only (``weights_only=True``: nothing in it is executed); ``mmap``: tensors
    are mapped from the file, read only when touched (for a look at the meta)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # pickle errors, zip errors, disallowed globals: all mean "not our kind of file"
        kind = _not_torch_kind(path)
        if kind is not None:  # torch's error for these (e.g. "pickled data") would describe a file it is not
            raise ValueError(f"{path}: not a loadable PyTorch checkpoint or state dict (it "
                             f"{'is' if kind == _EMPTY else 'reads as'} {kind}); "
                             f"{_ACCEPTED_WEIGHTS}") from None
        text = str(e)
        if text.startswith("Weights only load failed"):  # torch's text would suggest running the file's code
            blocked = re.search(r"GLOBAL (\S+)", text)
            what = f"a Python object ({blocked.group(1)})" if blocked else "pickled data beyond plain tensors"
            reason = f"it holds {what}; refused to unpickle it, since that could run code"
        else:
            reason = f"torch.load: {type(e).__name__}: {text.strip().splitlines()[0] if text.strip() else ''}"
        raise ValueError(f"{path}: not a loadable PyTorch checkpoint or state dict ({reason})") from None


def make_meta(
    model: YoloV4Tiny,
    names: Sequence[str],
    img_size: int = 416,
    scale_x_y: float = 1.05,
    source: str = CHECKPOINT_FORMAT,
) -> Dict[str, Any]:
    """The self-description every checkpoint carries."""
    if len(names) != model.num_classes:
        raise ValueError(f"{len(names)} class names for a model with {model.num_classes} classes")
    return {
        "format": CHECKPOINT_FORMAT,
        "version": META_VERSION,
        "model": model.config(),
        "names": list(names),
        "img_size": int(img_size),
        "scale_x_y": float(scale_x_y),
        "source": source,
    }


def meta_resize(meta: Dict[str, Any]) -> str:
    """How the weights of ``meta`` fit an image to their input unless told otherwise: "stretch" for Darknet's
    (unless their cfg says ``letter_box=1``: "darknet-letterbox"), as Darknet runs them; "letterbox" for the
    rest. Darknet weights converted before the meta said so run as yolov4-tiny.cfg says."""
    darknet = meta.get("source") == "darknet"
    return (meta.get("preprocess") or {}).get("resize", "stretch" if darknet else "letterbox")


def meta_input_shape(meta: Dict[str, Any]) -> Tuple[int, int]:
    """(height, width) of the input the weights of ``meta`` run at unless told otherwise: a Darknet cfg's own
    (``input_shape``, kept only where it is not square), else ``img_size`` squared."""
    shape = meta.get("input_shape")
    if shape:
        return int(shape[0]), int(shape[1])
    size = int(meta.get("img_size", 416))
    return size, size


def meta_nms(meta: Dict[str, Any]) -> str:
    """The NMS the weights of ``meta`` run with unless told otherwise: their cfg's for Darknet's ("darknet" for
    ``nms_kind=greedynms``, yolov4-tiny.cfg's, also where the meta does not say; "darknet-iou" for none), "iou"
    for the rest."""
    darknet = meta.get("source") == "darknet"
    kind = meta.get("nms", "darknet" if darknet else "iou")
    # Darknet weights converted before "darknet-iou" was told apart (meta version 1) stored their cfg's default
    # NMS as "iou"
    legacy = darknet and kind == "iou" and int(meta.get("version", 1)) < 2
    return "darknet-iou" if legacy else kind


def with_pipeline(meta: Dict[str, Any], resize: Optional[str] = None, nms: Optional[str] = None) -> Dict[str, Any]:
    """``meta`` with the resize mode and NMS its weights run with by default (:func:`meta_resize`,
    :func:`meta_nms`) set to ``resize`` and ``nms`` where given (checked): what ``tools/convert.py`` and
    ``tools/export.py`` store with ``--resize`` / ``--nms``. A copy, in the current meta version."""
    if resize is None and nms is None:
        return meta
    out = dict(meta, version=META_VERSION, nms=check_nms(nms) if nms is not None else meta_nms(meta))
    if resize is not None:
        out["preprocess"] = dict(meta.get("preprocess") or {}, resize=check_resize(resize))
    return out


def model_from_checkpoint(ckpt: Dict[str, Any], use_ema: bool = True) -> Tuple[YoloV4Tiny, Dict[str, Any]]:
    """Rebuild the network described by one of our checkpoints and load its (EMA) weights."""
    meta = ckpt["meta"]
    cfg = meta["model"]
    model = build_model(cfg["attention"], cfg["num_classes"], cfg["anchors"], cfg["anchor_masks"], cfg["attention_kw"])
    state = ckpt.get("ema") if use_ema and ckpt.get("ema") is not None else ckpt["model"]
    model.load_state_dict(state)
    return model, meta


def read_class_names(path: PathLike) -> List[str]:
    """One class name per line (blank lines ignored), as Darknet's .names and the port's classes files; or a
    Darknet ``.data`` file (``darknet detector test obj.data ...``), whose ``names=`` line gives the .names file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such class-names file")
    if path.suffix == ".data":
        from ..data.darknet import darknet_data_names

        path = darknet_data_names(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start}); save the class names as UTF-8") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise ValueError(f"{path}: no class names in it (expected one per line)")
    return names


def _names_for(classes: Union[None, PathLike, Sequence[str]], num_classes: Optional[int], path: Path) -> List[str]:
    if classes is not None:
        return read_class_names(classes) if isinstance(classes, (str, os.PathLike)) else list(classes)
    if num_classes is not None:
        return [f"class{i}" for i in range(int(num_classes))]
    raise ValueError(f"{path}: this weights file has no class names; pass the class list (--classes FILE) "
                     f"or the class count (--num-classes N)")


def _load_darknet(path: Path, classes: Union[None, PathLike, Sequence[str]], num_classes: Optional[int],
                  phi: Union[int, str, None], cfg: Optional[PathLike]) -> Tuple[YoloV4Tiny, Dict[str, Any]]:
    from ..models.darknet import (darknet_cfg_beside, darknet_cfg_names, darknet_stems, load_darknet_weights,
                                  read_darknet_cfg)

    cfg = Path(cfg) if cfg is not None else darknet_cfg_beside(path)
    settings = read_darknet_cfg(cfg) if cfg is not None else None
    found_names = None  # a .names file of the cfg's or the weights' name, when no class list was given
    if classes is None and num_classes is None:
        candidates = [cfg.with_suffix(".names")] if cfg is not None else []
        candidates += [path.with_name(f"{stem}.names") for stem in darknet_stems(path)]
        found_names = next((c for c in candidates if c.is_file()), None)
        classes = found_names
    names = _names_for(classes, num_classes, path)
    if settings is None:
        if not path.name.endswith(".conv.29"):
            cfg_names, base = darknet_cfg_names(path)
            looked = cfg_names + ([f"{base}.*.cfg"] if base else [])
            log.warning("%s: no .cfg found for these weights (looked beside them and in ../cfg/ for %s): running "
                        "them as yolov4-tiny.cfg says (anchors, masks, scale_x_y 1.05, 416x416, stretched input, "
                        "greedy DIoU NMS); pass --cfg if yours differ", path, " or ".join(looked))
        model = build_model(phi or 0, len(names))
    elif settings.num_classes != len(names):
        given = f"{found_names} (found beside) lists" if found_names is not None else "were given"
        raise ValueError(f"{cfg}: classes={settings.num_classes}, but {len(names)} class names {given} for {path}")
    else:
        model = build_model(phi or 0, len(names), settings.anchors, settings.anchor_masks)
        log.info("%s: anchors, masks, scale_x_y %g, input %dx%d (%s) and %s NMS from %s", path, settings.scale_x_y,
                 settings.width, settings.height, "stretched" if settings.resize == "stretch" else "letter_box=1",
                 "greedy DIoU" if settings.nms == "darknet" else "IoU", cfg)
    report = load_darknet_weights(model, path)
    # Training initializes from what fits (load_darknet_weights); a model to run needs its heads from the
    # file. Attention blocks (phi given) are asked for by the caller: they start untrained, as logged.
    if report.num_classes_in_file is None:
        raise ValueError(f"{path}: holds only the backbone (the first 29 layers), which initializes training "
                         f"(python tools/train.py --weights {path}); it has no heads to detect with")
    if report.num_classes_in_file != len(names):
        n = report.num_classes_in_file
        if settings is not None:  # the names agree with the cfg (checked above): it is the cfg that is not theirs
            raise ValueError(f"{path}: the file holds a {n}-class model, but {cfg} says classes={len(names)}: give "
                             f"the .cfg these weights were trained with (--cfg)")
        given = f"{found_names} (found beside) lists {len(names)}" if found_names is not None else (
            f"{len(names)} classes were given")
        raise ValueError(f"{path}: the file holds a {n}-class model, but {given}: pass its own class list ({n} "
                         f"names, e.g. coco.names) or --num-classes {n}")
    if settings is None:
        meta = make_meta(model, names, scale_x_y=1.05, source="darknet")
        resize, nms = "stretch", "darknet"  # yolov4-tiny.cfg's: no letter_box, nms_kind=greedynms
    else:
        meta = make_meta(model, names, settings.img_size, settings.scale_x_y, source="darknet")
        if settings.width != settings.height:  # see meta_input_shape
            meta["input_shape"] = [settings.height, settings.width]
        resize, nms = settings.resize, settings.nms
    # Darknet's own pipeline by default (flags override; see meta_resize, meta_nms)
    meta["preprocess"], meta["nms"] = {"resize": resize}, nms
    return model.eval(), meta


def warn_names_unused(path: PathLike, meta: Dict[str, Any], classes: Any, num_classes: Optional[int]) -> None:
    """Say that --classes-file / --num-classes went unused: our checkpoints carry their class names (a user
    who meant to rename the classes would otherwise never know)."""
    if (classes is not None or num_classes is not None) and meta.get("source") not in ("darknet", "port"):
        names = ", ".join(meta["names"][:5]) + (", ..." if len(meta["names"]) > 5 else "")
        log.warning("%s: carries its class names (%s), which are used; --classes-file / --num-classes are for "
                    "weights without names (Darknet, the port)", path, names)


def load_model(
    path: PathLike,
    classes: Union[None, PathLike, Sequence[str]] = None,
    num_classes: Optional[int] = None,
    phi: Union[int, str, None] = None,
    use_ema: bool = True,
    cfg: Optional[PathLike] = None,
) -> Tuple[YoloV4Tiny, Dict[str, Any]]:
    """Load any supported weights file into a ready model (eval mode, CPU) and its meta dict.

    - our checkpoints (``.pt``), which carry everything;
    - Darknet ``.weights`` (needs ``classes`` or ``num_classes``, unless a ``.names`` file of the cfg's name lies
      beside the cfg, or one of the weights' name beside them; ``phi`` defaults to 0). Anchors, masks,
      ``scale_x_y`` and input size come from ``cfg``, else from the ``.cfg`` of the weights' name
      (:func:`~yolo_attn.models.darknet.darknet_cfg_beside`), else from the official yolov4-tiny.cfg (warned);
    - state dicts of the popular PyTorch port (needs ``classes`` or ``num_classes``; phi is detected).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(missing_weights_message(path))
    if path.suffix.lower() in (".onnx", ".xml", ".bin", ".torchscript"):  # torch.load would call them threats
        raise ValueError(f"{path}: an exported model (ONNX / OpenVINO / TorchScript), which runs in "
                         f"tools/predict.py and tools/eval.py but is not a checkpoint; use the checkpoint it was "
                         f"exported from")
    if path.suffix.lower() == ".weights" or path.name.endswith(".conv.29"):
        return _load_darknet(path, classes, num_classes, phi, cfg)
    if cfg is not None:
        raise ValueError(f"{cfg}: a Darknet .cfg goes with Darknet .weights, not with {path}")
    ckpt = load_checkpoint(path)
    if is_our_checkpoint(ckpt):
        model, meta = model_from_checkpoint(ckpt, use_ema)
        return model.eval(), meta
    if isinstance(ckpt, dict) and ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        from ..models.port import PORT_PREPROCESS, PORT_SCALE_X_Y, build_port_model, strip_wrapper_prefixes

        if any(k.startswith("head_p5.") for k in strip_wrapper_prefixes(ckpt)):  # torch.save(model.state_dict())
            raise ValueError(f"{path}: the bare state dict of a yolo_attn model, without the class names, anchors "
                             f"and decoding its checkpoint carries; use the checkpoint itself (the run's "
                             f"weights/best.pt or last.pt)")
        names = _names_for(classes, num_classes, path)
        model = build_port_model(ckpt, len(names), source=str(path))
        meta = make_meta(model, names, scale_x_y=PORT_SCALE_X_Y, source="port")
        meta["preprocess"] = dict(PORT_PREPROCESS)
        return model.eval(), meta
    raise ValueError(f"{path}: not a yolo_attn checkpoint, a Darknet .weights file or a state dict "
                     f"(found {type(ckpt).__name__})")
