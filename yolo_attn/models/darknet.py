"""Darknet ``.weights`` and ``.cfg`` interop for YOLOv4-tiny.

File layout (AlexeyAB/darknet ``src/parser.c``): a header of int32 major, minor, revision and ``seen``
(uint64 when major * 10 + minor >= 2, else uint32), then for each convolutional layer in cfg order:
biases[n]; with batch norm, also scales[n] (BN gamma), rolling_mean[n], rolling_variance[n] (and then
the "biases" are BN beta); then the weights, n * c_in * k * k float32 in OIHW order.

Darknet and OpenCV accept truncated files without a word; here the length must match exactly one of:
the full network (for some class count) or the partial backbone file ``yolov4-tiny.conv.29``.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn as nn

from ..utils.paths import write_atomic
from .yolo import YoloV4Tiny

__all__ = ["DarknetLoadReport", "load_darknet_weights", "save_darknet_weights", "write_darknet_cfg"]

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
        expected_full = fixed + per_output * model.num_anchors * (5 + model.num_classes)
        raise ValueError(
            f"{path}: {values.size:,} float32 values after the {offset}-byte header fit no YOLOv4-tiny layout "
            f"(expected {expected_full:,} for the full network with {model.num_classes} classes, or {partial:,} "
            f"for yolov4-tiny.conv.29); the file is truncated, oversized or from another network"
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
                      scale_x_y: float = 1.05) -> None:
    """Write the Darknet ``.cfg`` matching ``model`` (phi=0 only: Darknet has no attention layers), with its
    anchors and masks. ``scale_x_y`` is the decoding the weights were trained for: 1.05 for Darknet's own,
    the checkpoint's ``scale_x_y`` (2.0 with the ``multi`` assigner) for ours."""
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

    anchors = ",  ".join(f"{w:g},{h:g}" for w, h in model.anchors)
    filters = model.num_anchors * (5 + model.num_classes)

    def yolo(mask):
        return ["[yolo]", f"mask = {','.join(map(str, mask))}", f"anchors = {anchors}",
                f"classes={model.num_classes}", f"num={len(model.anchors)}", "jitter=.3", f"scale_x_y = {scale_x_y:g}",
                "cls_normalizer=1.0", "iou_normalizer=0.07", "iou_loss=ciou", "ignore_thresh = .7",
                "truth_thresh = 1", "random=0", "resize=1.5", "nms_kind=greedynms", "beta_nms=0.6", ""]

    lines = ["[net]", "batch=64", "subdivisions=1", f"width={width}", f"height={height}", "channels=3",
             "momentum=0.9", "decay=0.0005", "angle=0", "saturation = 1.5", "exposure = 1.5", "hue=.1",
             "learning_rate=0.00261", "burn_in=1000", "max_batches = 2000200", "policy=steps",
             "steps=1600000,1800000", "scales=.1,.1", ""]
    lines += conv(32, 3, 2) + conv(64, 3, 2) + csp(64) + csp(128) + csp(256) + conv(512, 3)
    lines += conv(256, 1) + conv(512, 3) + conv(filters, 1, bn=False, act="linear") + yolo(model.anchor_masks[0])
    lines += ["[route]", "layers = -4", ""] + conv(128, 1) + ["[upsample]", "stride=2", ""]
    lines += ["[route]", "layers = -1, 23", ""] + conv(256, 3) + conv(filters, 1, bn=False, act="linear")
    lines += yolo(model.anchor_masks[1])
    write_atomic(path, "\n".join(lines).encode())
