"""Darknet ``.weights`` and ``.cfg`` interop for YOLOv4-tiny.

File layout (AlexeyAB/darknet ``src/parser.c``): a header of int32 major, minor, revision and ``seen``
(uint64 when major * 10 + minor >= 2, else uint32), then for each convolutional layer in cfg order:
biases[n]; with batch norm, also scales[n] (BN gamma), rolling_mean[n], rolling_variance[n] (and then
the "biases" are BN beta); then the weights, n * c_in * k * k float32 in OIHW order.

Darknet and OpenCV accept truncated files without a word; here the length must match exactly one of:
the full network (for some class count) or the partial backbone file ``yolov4-tiny.conv.29``.

A ``.cfg`` (:func:`read_darknet_cfg`) gives what a ``.weights`` file does not hold: the anchors (Darknet users
recompute them with ``calc_anchors``), the masks, the class count, ``scale_x_y`` and the input size.
"""
from __future__ import annotations

import glob
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn as nn

from ..utils.paths import write_atomic
from .decode import check_nms
from .yolo import YoloV4Tiny, build_model, check_input_size

__all__ = ["DarknetCfg", "DarknetLoadReport", "darknet_cfg_beside", "darknet_cfg_names", "darknet_cfg_text",
           "darknet_stems", "load_darknet_weights", "read_darknet_cfg", "save_darknet_weights", "write_darknet_cfg"]

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
_PARTIAL_LAYERS = 17  # yolov4-tiny.conv.29: cfg layers 0-28, i.e. the first 17 convolutional layers
_HEAD_INDICES = (17, 20)  # the two linear prediction convs in the darknet_convs() order


@dataclass
class DarknetLoadReport:
    """What :func:`load_darknet_weights` found and did."""

    version: Tuple[int, int, int]
    seen: int
    layers_in_file: int
    num_classes_in_file: Optional[int]
    loaded: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)  # tensors in the file that did not fit the model
    not_initialized: List[str] = field(default_factory=list)  # model parameters the file does not cover


def _conv_sizes(conv: nn.Conv2d, has_bn: bool) -> int:
    n = conv.out_channels
    return n * (4 if has_bn else 1) + conv.weight.numel()


def _read_header(data: bytes, path: PathLike) -> Tuple[Tuple[int, int, int], int, int]:
    if len(data) < 16:
        raise ValueError(f"{path}: {len(data)} bytes is too short for a Darknet .weights header")
    major, minor, revision = np.frombuffer(data[:12], dtype="<i4").tolist()
    if major * 10 + minor >= 2:
        if len(data) < 20:
            raise ValueError(f"{path}: {len(data)} bytes is too short for a version {major}.{minor} header")
        seen, offset = int(np.frombuffer(data[12:20], dtype="<u8")[0]), 20
    else:
        seen, offset = int(np.frombuffer(data[12:16], dtype="<u4")[0]), 16
    return (major, minor, revision), seen, offset


def load_darknet_weights(model: YoloV4Tiny, path: PathLike) -> DarknetLoadReport:
    """Load an official Darknet ``.weights`` (full network or ``.conv.29``) into ``model`` in place.

    The file's class count is inferred from its length. When it differs from the model's, or the model
    has attention blocks, everything that matches loads and the rest is reported (and logged).
    Raises ValueError for a file whose length fits no YOLOv4-tiny layout.
    """
    path = Path(path)
    data = path.read_bytes()
    version, seen, offset = _read_header(data, path)
    body = len(data) - offset
    if body % 4:
        raise ValueError(f"{path}: {body} bytes after the header is not a whole number of float32 values")
    values = np.frombuffer(data, dtype="<f4", offset=offset)

    convs = model.darknet_convs()
    if any(bn is not None and not isinstance(bn, nn.BatchNorm2d) for _, bn in convs):
        raise ValueError("cannot load Darknet weights into a fused model; load first, then fuse")
    sizes = [_conv_sizes(conv, bn is not None) for conv, bn in convs]
    partial = sum(sizes[:_PARTIAL_LAYERS])
    fixed = sum(s for i, s in enumerate(sizes) if i not in _HEAD_INDICES)
    per_output = sum(convs[i][0].in_channels + 1 for i in _HEAD_INDICES)  # weights + bias per output channel

    file_classes: Optional[int] = model.num_classes
    if values.size == partial:
        layers = _PARTIAL_LAYERS
        file_classes = None
    elif values.size > fixed and (values.size - fixed) % per_output == 0:
        outputs = (values.size - fixed) // per_output
        na = model.num_anchors
        if outputs % na or outputs // na < 6:
            raise ValueError(f"{path}: the length fits {outputs} head outputs, not {na} anchors x (5 + classes)")
        layers = len(convs)
        file_classes = outputs // na - 5
    else:
        def full(classes: int) -> str:
            return f"{fixed + per_output * model.num_anchors * (5 + classes):,} with {classes} classes"

        # the file's own class count cannot be told from a wrong length: the model's, and COCO's, for scale
        counts = [model.num_classes] + ([80] if model.num_classes != 80 else [])
        raise ValueError(
            f"{path}: {values.size:,} float32 values after the {offset}-byte header fit no YOLOv4-tiny layout "
            f"(the full network has {' or '.join(full(c) for c in counts)}; yolov4-tiny.conv.29 {partial:,}); "
            f"the file is truncated, oversized or from another network"
        )

    report = DarknetLoadReport(version, seen, layers, file_classes)
    names = {id(m): n for n, m in model.named_modules()}
    pos = 0
    with torch.no_grad():
        for i, (conv, bn) in enumerate(convs[:layers]):
            n_out = conv.out_channels if file_classes == model.num_classes or i not in _HEAD_INDICES else (
                model.num_anchors * (5 + file_classes)
            )
            w_shape = (n_out,) + tuple(conv.weight.shape[1:])
            chunk_names = ["bias"] if bn is None else ["bn.bias", "bn.weight", "bn.running_mean", "bn.running_var"]
            chunks = {}
            for name in chunk_names:
                chunks[name] = values[pos : pos + n_out]
                pos += n_out
            n_w = int(np.prod(w_shape))
            chunks["weight"] = values[pos : pos + n_w].reshape(w_shape)
            pos += n_w
            label = names[id(conv)]
            if n_out != conv.out_channels:
                report.skipped.append(f"{label} (file has {n_out} outputs for {file_classes} classes, "
                                      f"model has {conv.out_channels})")
                continue
            conv.weight.copy_(torch.from_numpy(chunks["weight"].copy()))
            if bn is None:
                conv.bias.copy_(torch.from_numpy(chunks["bias"].copy()))
            else:
                bn.bias.copy_(torch.from_numpy(chunks["bn.bias"].copy()))
                bn.weight.copy_(torch.from_numpy(chunks["bn.weight"].copy()))
                bn.running_mean.copy_(torch.from_numpy(chunks["bn.running_mean"].copy()))
                bn.running_var.copy_(torch.from_numpy(chunks["bn.running_var"].copy()))
            report.loaded.append(label)
    assert pos == values.size, (pos, values.size)

    covered = set()
    for conv, bn in convs[:layers]:
        if names[id(conv)] in report.loaded:
            covered.add(id(conv))
            if bn is not None:
                covered.add(id(bn))
    report.not_initialized = [
        n for n, m in model.named_modules()
        if id(m) not in covered and any(True for _ in m.parameters(recurse=False))
    ]
    if report.skipped or report.not_initialized:
        log.warning(
            "%s: loaded %d of %d conv layers; skipped %s; not initialized by the file: %s",
            path, len(report.loaded), len(convs), report.skipped or "nothing",
            ", ".join(report.not_initialized) or "nothing",
        )
    return report


@dataclass
class DarknetCfg:
    """What a yolov4-tiny ``.cfg`` says that a model, its input and its decoding need. ``resize`` and ``nms``
    are how Darknet's ``detector test`` / ``map`` / ``demo`` run it: the image stretched to the input unless
    ``letter_box=1``, and the NMS of the last [yolo]'s ``nms_kind`` (:data:`~yolo_attn.models.NMS_KINDS`)."""

    path: Path
    width: int
    height: int
    num_classes: int
    anchors: List[Tuple[float, float]]
    anchor_masks: List[Tuple[int, ...]]
    scale_x_y: float
    resize: str = "stretch"
    nms: str = "darknet"

    @property
    def img_size(self) -> int:
        """The larger side of the cfg's input (a meta's ``img_size``; ``input_shape`` carries both)."""
        return max(self.width, self.height)


_SECTION_ALIASES = {"conv": "convolutional", "network": "net", "max": "maxpool"}
_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_DROPPED = str.maketrans("", "", " \t\r\n")  # what Darknet's strip() removes


def _parse_cfg(text: str, path: PathLike) -> List[Tuple[str, int, Dict[str, Tuple[str, int]]]]:
    """Darknet's reader (``src/utils.c`` fgetl/strip, ``src/option_list.c``): lines split at newlines only; spaces,
    tabs and CRs dropped; a line starting with ``#`` or ``;`` is a comment (only there: ``activation=leaky # x`` is the
    activation ``leaky#x`` to Darknet); ``[section]`` lines, then ``key=value`` lines. Returns
    (kind, line, {key: (value, line)}). A key given twice in a section is refused: Darknet takes the first, OpenCV
    the last, so the two do not agree on what the file says."""
    if "\0" in text:
        raise ValueError(f"{path}: not a text .cfg file (it holds NUL bytes: a .weights file, or UTF-16 text?)")
    sections: List[Tuple[str, int, Dict[str, Tuple[str, int]]]] = []
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.translate(_DROPPED)
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            if not line.endswith("]"):
                raise ValueError(f"{path}: line {number}: '{raw.strip()}' is not a [section] header")
            kind = line[1:-1]  # Darknet compares section names exactly: [Convolutional] is no layer it knows
            sections.append((_SECTION_ALIASES.get(kind, kind), number, {}))
        elif "=" not in line or not sections:
            where = "not key=value" if "=" not in line else "before the first [section]"
            raise ValueError(f"{path}: line {number}: '{raw.strip()}' is {where}")
        else:
            key, value = line.split("=", 1)
            options = sections[-1][2]
            if key in options:
                raise ValueError(f"{path}: line {number}: {key} is given again in this [{sections[-1][0]}] (first at "
                                 f"line {options[key][1]}); Darknet reads the first, OpenCV the last: keep one")
            options[key] = (value, number)
    return sections


def _number(opts: Dict[str, Tuple[str, int]], key: str, default: str, where: str, kind: type = int):
    """``opts[key]`` (or ``default``) read as Darknet's atoi / atof do: the leading number, the rest ignored
    (``80.0`` is 80, ``255;x`` is 255); ``where`` names the section when there is no number at all."""
    value = opts[key][0] if key in opts else default
    match = (_INT if kind is int else _FLOAT).match(value)
    if match is None:
        raise ValueError(f"{where}: {key}={value} is not {'an integer' if kind is int else 'a number'}")
    number = kind(match.group(0))
    if kind is float and not math.isfinite(number):
        raise ValueError(f"{where}: {key}={value} is not a finite number")
    return number


def _text(opts: Dict[str, Tuple[str, int]], key: str, default: str) -> str:
    return opts[key][0] if key in opts else default


# Keys that change how Darknet reads a layer's weights or computes it, with the value that does nothing: any
# other value is refused (the shape check alone would let them through).
_INERT = {
    "convolutional": {"dontload": 0, "dontloadscales": 0, "flipped": 0, "antialiasing": 0, "share_index": None,
                      "xnor": 0, "binary": 0, "deform": 0, "sway": 0, "rotate": 0, "stretch": 0,
                      "stretch_sway": 0, "assisted_excitation": 0},
    "maxpool": {"antialiasing": 0, "maxpool_depth": 0, "maxpool_zero_nonmax": 0},
    "yolo": {"map": None},
}


def _refuse_active_keys(kind: str, opts: Dict[str, Tuple[str, int]], where: str) -> None:
    for key, inert in _INERT.get(kind, {}).items():
        if key in opts and (inert is None or _number(opts, key, "0", where) != inert):
            raise ValueError(f"{where} (line {opts[key][1]}): {key}={opts[key][0]} changes how Darknet reads or runs "
                             f"this layer; yolov4-tiny does not use it")


def _layer_shape(kind: str, opts: Dict[str, Tuple[str, int]], index: int, where: str) -> Dict[str, object]:
    """The settings that shape a layer, with Darknet's defaults (``src/parser.c``), normalized for comparing
    (``pad=1`` as its padding, ``route`` layers as absolute indices, no dilation on 1x1 convolutions)."""
    def num(key: str, default: str) -> int:
        return _number(opts, key, default, where)

    _refuse_active_keys(kind, opts, where)
    if kind == "convolutional":
        size, stride = num("size", "1"), num("stride", "1")
        stride_x, stride_y = num("stride_x", "-1"), num("stride_y", "-1")
        return {"batch_normalize": num("batch_normalize", "0"), "filters": num("filters", "1"), "size": size,
                "stride_x": stride_x if stride_x >= 1 else stride, "stride_y": stride_y if stride_y >= 1 else stride,
                "padding": size // 2 if num("pad", "0") else num("padding", "0"),
                "activation": _text(opts, "activation", "logistic"), "groups": num("groups", "1"),
                "dilation": num("dilation", "1") if size > 1 else 1}
    if kind == "route":
        text = _text(opts, "layers", "")
        if not text or any(_INT.fullmatch(v) is None for v in text.split(",")):
            raise ValueError(f"{where}: layers={text} is not a list of layer numbers")
        layers = [int(v) for v in text.split(",")]
        return {"layers": tuple(v + index if v < 0 else v for v in layers), "groups": num("groups", "1"),
                "group_id": num("group_id", "0")}
    if kind == "maxpool":
        stride = num("stride", "1")
        size = num("size", str(stride))
        return {"size": size, "stride_x": num("stride_x", str(stride)), "stride_y": num("stride_y", str(stride)),
                "padding": num("padding", str(size - 1))}
    if kind == "upsample":
        return {"stride": num("stride", "2"), "scale": _number(opts, "scale", "1", where, float)}
    return {}  # [yolo]: its settings are read by read_darknet_cfg


def _yolo_settings(opts: Dict[str, Tuple[str, int]], where: str) -> Tuple[int, List[Tuple[float, float]],
                                                                          Tuple[int, ...], float]:
    """classes, anchors, mask and scale_x_y of a [yolo] section, as Darknet's parse_yolo reads them."""
    _refuse_active_keys("yolo", opts, where)
    if _number(opts, "new_coords", "0", where):
        raise ValueError(f"{where}: new_coords=1 (Scaled-YOLOv4's decoding) is not supported; yolov4-tiny decodes "
                         f"with new_coords=0")
    num = _number(opts, "num", "1", where)
    if num < 1:
        raise ValueError(f"{where}: num={num}; a [yolo] layer needs at least one anchor")
    text = _text(opts, "anchors", "")
    if not text:
        raise ValueError(f"{where}: no anchors= line")
    try:
        values = [float(_FLOAT.fullmatch(v).group(0)) for v in text.split(",") if v]
    except AttributeError:
        raise ValueError(f"{where}: anchors={text} is not a list of numbers") from None
    if len(values) < 2 * num:
        raise ValueError(f"{where}: num={num}, but anchors= lists {len(values) / 2:g} anchors (w,h pairs)")
    values = values[: 2 * num]  # Darknet reads num pairs and ignores the rest
    mask_text = _text(opts, "mask", ",".join(map(str, range(num))))
    if not mask_text or any(_INT.fullmatch(v) is None for v in mask_text.split(",")):
        raise ValueError(f"{where}: mask={mask_text} is not a list of anchor numbers")
    mask = tuple(int(v) for v in mask_text.split(","))
    if min(mask) < 0 or max(mask) >= num:
        raise ValueError(f"{where}: mask={mask_text} points past the {num} anchors")
    anchors = [(values[i], values[i + 1]) for i in range(0, len(values), 2)]
    return _number(opts, "classes", "20", where), anchors, mask, _number(opts, "scale_x_y", "1", where, float)


def read_darknet_cfg(path: PathLike) -> DarknetCfg:
    """Read a Darknet ``.cfg`` and check that it describes YOLOv4-tiny (any class count, anchors, masks and
    input size; the layers themselves as in the official ``yolov4-tiny.cfg``).

    The check compares each layer's shape-giving settings (filters, size, stride, padding, activation, groups,
    route layers, ...) with those of the cfg :func:`darknet_cfg_text` writes for the same classes and anchors,
    and raises a ValueError naming the first line that differs: another network (yolov4-tiny-3l, YOLOv3-tiny,
    a changed activation) would load its weights into the wrong layers. Keys that change how Darknet reads or
    runs a layer (``dontload``, ``flipped``, ``antialiasing``, ``map``, ...) are refused as well.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a folder; give the .cfg file")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such Darknet .cfg file")
    sections = _parse_cfg(path.read_text(encoding="utf-8-sig", errors="replace"), path)
    if not sections or sections[0][0] != "net":
        raise ValueError(f"{path}: a Darknet .cfg starts with a [net] section")
    _, net_line, net = sections[0]
    at = f"{path}: [net] at line {net_line}"
    for key in ("width", "height"):
        if key not in net:
            raise ValueError(f"{at}: no {key}= line (the network's input size)")
    width, height = _number(net, "width", "0", at), _number(net, "height", "0", at)
    if _number(net, "channels", "3", at) != 3:
        raise ValueError(f"{at}: channels={net['channels'][0]}; yolov4-tiny takes 3-channel (RGB) images")
    check_input_size((height, width), f"{path}: [net] width x height")
    layers = sections[1:]
    heads = [_yolo_settings(opts, f"{path}: [yolo] at line {line}") for kind, line, opts in layers if kind == "yolo"]
    if len(heads) != 2:
        raise ValueError(f"{path}: {len(heads)} [yolo] layers; yolov4-tiny has two (strides 32 and 16)")
    (classes, anchors, mask_p5, scale), (classes_p4, anchors_p4, mask_p4, scale_p4) = heads
    for what, a, b in (("classes", classes, classes_p4), ("anchors", anchors, anchors_p4),
                       ("scale_x_y", scale, scale_p4)):
        if a != b:
            raise ValueError(f"{path}: the two [yolo] layers differ in {what} ({a} and {b}); one model decodes "
                             f"both heads with the same {what}")
    if classes < 1:
        raise ValueError(f"{path}: [yolo] classes={classes}; a detector needs at least one class")
    try:
        model = build_model(0, classes, anchors, [mask_p5, mask_p4])
    except ValueError as e:
        raise ValueError(f"{path}: the [yolo] masks do not fit yolov4-tiny: {e}") from None
    expected = _parse_cfg(darknet_cfg_text(model, width, height, scale), "yolov4-tiny")[1:]
    for index, ((kind, line, opts), (want_kind, _, want_opts)) in enumerate(zip(layers, expected)):
        if kind != want_kind:
            raise ValueError(f"{path}: line {line}: layer {index} is [{kind}], where yolov4-tiny has "
                             f"[{want_kind}]; only the yolov4-tiny network loads")
        got = _layer_shape(kind, opts, index, f"{path}: [{kind}] at line {line}")
        want = _layer_shape(kind, want_opts, index, "yolov4-tiny")
        for key, value in want.items():
            if got[key] == value:
                continue
            if key == "filters" and index + 1 < len(layers) and layers[index + 1][0] == "yolo":
                raise ValueError(f"{path}: line {line}: the convolution before the [yolo] at line "
                                 f"{layers[index + 1][1]} has filters={got[key]}; with classes={classes} and "
                                 f"{len(mask_p5)} anchors per head it must be {len(mask_p5)} x (5 + {classes}) = "
                                 f"{value}")
            raise ValueError(f"{path}: line {line}: layer {index} [{kind}] has {key}={got[key]}, where "
                             f"yolov4-tiny has {key}={value}; only the yolov4-tiny network loads")
    if len(layers) != len(expected):
        raise ValueError(f"{path}: {len(layers)} layers after [net]; yolov4-tiny has {len(expected)}")
    letter_box = _INT.match(_text(net, "letter_box", "0"))  # atoi: no number is 0
    resize = "darknet-letterbox" if letter_box and int(letter_box.group(0)) else "stretch"
    return DarknetCfg(path, width, height, classes, anchors, [mask_p5, mask_p4], scale, resize,
                      _nms_kind(path, [(line, opts) for kind, line, opts in layers if kind == "yolo"][-1]))


def _nms_kind(path: Path, yolo: Tuple[int, Dict[str, Tuple[str, int]]]) -> str:
    """Our NMS for the ``nms_kind`` Darknet reads from its last [yolo] layer (``parse_yolo``): ``greedynms`` is
    "darknet" (box.c's ``box_diou``, greedy DIoU with the exponent 0.6, whatever ``beta_nms`` says); ``diounms``
    is the same with ``beta_nms`` as the exponent (0.6 by default, another value warned); any other word is
    Darknet's default (``do_nms_sort``, IoU), "darknet-iou"."""
    line, opts = yolo
    where = f"{path}: [yolo] at line {line}"
    kind = _text(opts, "nms_kind", "default")
    if kind not in ("greedynms", "diounms"):
        return "darknet-iou"
    if kind == "diounms":
        beta = _number(opts, "beta_nms", "0.6", where, float)
        if abs(beta - 0.6) > 1e-6:
            log.warning("%s: nms_kind=diounms with beta_nms=%g runs as greedynms here (beta_nms 0.6)", where, beta)
    return "darknet"


def darknet_stems(weights: PathLike) -> List[str]:
    """The names a Darknet model's files go by: the weights' own, and without the suffix Darknet's training gives
    its saves (``obj`` for ``obj_best``, ``obj_last``, ``obj_final``, ``obj_4000``)."""
    stem = Path(weights).stem
    base = re.sub(r"_(best|last|final|\d+)$", "", stem)
    return [stem] if base == stem else [stem, base]


def darknet_cfg_names(weights: PathLike) -> Tuple[List[str], Optional[str]]:
    """The .cfg names a ``.weights`` file goes by (:func:`darknet_stems`), and for Darknet's saves the name that
    cfgs with more dots start with (Darknet names saves after the cfg up to its first dot: ``yolo-obj.v2.cfg`` ->
    ``yolo-obj_best.weights``; ``yolo-obj`` here); None for other weights."""
    stems = darknet_stems(weights)
    return [f"{stem}.cfg" for stem in stems], (stems[-1] if len(stems) > 1 else None)


def darknet_cfg_beside(weights: PathLike) -> Optional[Path]:
    """The ``.cfg`` that goes with a ``.weights`` file by Darknet's naming: the same name (``yolov4-tiny.cfg``
    for ``yolov4-tiny.weights``), or the name without the suffix Darknet's training gives its saves
    (``obj.cfg`` for ``obj_best.weights``, ``obj_last``, ``obj_final``, ``obj_4000``); looked for beside the
    weights, then in ``../cfg/`` (Darknet's own layout: ``backup/obj_best.weights``, ``cfg/obj.cfg``); then, for
    a save, a cfg with more dots (``obj.v2.cfg``: Darknet cuts the name at the first dot), a ValueError when
    several in one folder fit."""
    weights = Path(weights)
    folders = (weights.parent, weights.parent.parent / "cfg")
    names, base = darknet_cfg_names(weights)
    for folder in folders:
        for name in names:
            if (folder / name).is_file():
                return folder / name
    if base is None:
        return None
    for folder in folders:
        dotted = sorted(p for p in folder.glob(f"{glob.escape(base)}.*.cfg") if p.is_file())
        if len(dotted) > 1:
            raise ValueError(f"{weights}: {' and '.join(map(str, dotted))} could each be its .cfg (Darknet names its "
                             f"saves after the cfg up to the first dot); pass the one it was trained with (--cfg)")
        if dotted:
            return dotted[0]
    return None


def save_darknet_weights(model: YoloV4Tiny, path: PathLike, seen: int = 0) -> None:
    """Write ``model`` as a Darknet 0.2.5 ``.weights`` file (atomically: temp file, then rename).

    Attention blocks have no Darknet layer and are not written (a warning says so); such a file still
    initializes the plain network.
    """
    convs = model.darknet_convs()
    if any(bn is not None and not isinstance(bn, nn.BatchNorm2d) for _, bn in convs):
        raise ValueError("cannot save a fused model in Darknet format (its BatchNorm layers are folded)")
    if model.attention is not None:
        log.warning("Darknet has no '%s' layer: the attention blocks are not written to %s", model.attention, path)
    parts = [np.array([0, 2, 5], dtype="<i4").tobytes(), np.array([seen], dtype="<u8").tobytes()]
    for conv, bn in convs:
        tensors = [conv.bias] if bn is None else [bn.bias, bn.weight, bn.running_mean, bn.running_var]
        tensors.append(conv.weight)
        parts += [t.detach().cpu().float().numpy().astype("<f4").tobytes() for t in tensors]
    write_atomic(path, b"".join(parts))


def write_darknet_cfg(model: YoloV4Tiny, path: PathLike, width: int = 416, height: int = 416,
                      scale_x_y: float = 1.05, letter_box: bool = False, nms: str = "darknet") -> None:
    """Write :func:`darknet_cfg_text` to ``path`` (atomically)."""
    write_atomic(path, darknet_cfg_text(model, width, height, scale_x_y, letter_box, nms).encode())


def darknet_cfg_text(model: YoloV4Tiny, width: int = 416, height: int = 416, scale_x_y: float = 1.05,
                     letter_box: bool = False, nms: str = "darknet") -> str:
    """The Darknet ``.cfg`` matching ``model`` (phi=0 only: Darknet has no attention layers), with its
    anchors and masks. ``scale_x_y`` is the decoding the weights were trained for: 1.05 for Darknet's own,
    the checkpoint's ``scale_x_y`` (2.0 with the ``multi`` assigner) for ours. ``letter_box``: Darknet's
    detector letterboxes its input (``letter_box=1``) instead of stretching it, as our models were trained.
    ``nms``: "darknet" writes yolov4-tiny.cfg's ``nms_kind=greedynms``; the others leave Darknet's default (IoU
    NMS over every class above the threshold per box, "darknet-iou")."""
    if model.attention is not None:
        raise ValueError(f"Darknet has no '{model.attention}' layer; only phi=0 models have a .cfg")

    def conv(filters, size, stride=1, bn=True, act="leaky"):
        if bn:
            return ["[convolutional]", "batch_normalize=1", f"filters={filters}", f"size={size}",
                    f"stride={stride}", "pad=1", f"activation={act}", ""]
        return ["[convolutional]", f"size={size}", f"stride={stride}", "pad=1", f"filters={filters}",
                f"activation={act}", ""]

    def csp(c):
        return (conv(c, 3) + ["[route]", "layers=-1", "groups=2", "group_id=1", ""] + conv(c // 2, 3)
                + conv(c // 2, 3) + ["[route]", "layers = -1,-2", ""] + conv(c, 1)
                + ["[route]", "layers = -6,-1", "", "[maxpool]", "size=2", "stride=2", ""])

    anchors = ",  ".join(f"{w:.9g},{h:.9g}" for w, h in model.anchors)  # 9 digits: float32 exactly
    filters = model.num_anchors * (5 + model.num_classes)

    def yolo(mask):
        return ["[yolo]", f"mask = {','.join(map(str, mask))}", f"anchors = {anchors}",
                f"classes={model.num_classes}", f"num={len(model.anchors)}", "jitter=.3",
                f"scale_x_y = {scale_x_y:.9g}", "cls_normalizer=1.0", "iou_normalizer=0.07", "iou_loss=ciou",
                "ignore_thresh = .7", "truth_thresh = 1", "random=0", "resize=1.5"] + (
                    ["nms_kind=greedynms", "beta_nms=0.6"] if check_nms(nms) == "darknet" else []) + [""]

    lines = ["[net]", "batch=64", "subdivisions=1", f"width={width}", f"height={height}", "channels=3",
             "momentum=0.9", "decay=0.0005", "angle=0", "saturation = 1.5", "exposure = 1.5", "hue=.1",
             "learning_rate=0.00261", "burn_in=1000", "max_batches = 2000200", "policy=steps",
             "steps=1600000,1800000", "scales=.1,.1"] + (["letter_box=1"] if letter_box else []) + [""]
    lines += conv(32, 3, 2) + conv(64, 3, 2) + csp(64) + csp(128) + csp(256) + conv(512, 3)
    lines += conv(256, 1) + conv(512, 3) + conv(filters, 1, bn=False, act="linear") + yolo(model.anchor_masks[0])
    lines += ["[route]", "layers = -4", ""] + conv(128, 1) + ["[upsample]", "stride=2", ""]
    lines += ["[route]", "layers = -1, 23", ""] + conv(256, 3) + conv(filters, 1, bn=False, act="linear")
    lines += yolo(model.anchor_masks[1])
    return "\n".join(lines)
