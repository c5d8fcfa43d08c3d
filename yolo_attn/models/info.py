"""Model size and cost: parameter counts and FLOPs, as Darknet reports them."""
from __future__ import annotations

import copy
from typing import Dict, Tuple, Union

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from .attention import ATTENTION_BY_PHI
from .yolo import build_model

__all__ = ["model_info", "model_info_table"]


def model_info(model: nn.Module, img_size: Union[int, Tuple[int, int]] = 416) -> Dict[str, float]:
    """Parameters and GFLOPs of one forward pass of a single image.

    FLOPs follow torch's FlopCounterMode: 2 per multiply-accumulate of convolutions and matrix products,
    which is Darknet's convention (6.908 BFLOPs for yolov4-tiny at 416). Element-wise work (BN, activations,
    pooling, attention gating) is not counted, as in Darknet.

    Args:
        img_size: input side, or (height, width).
    Returns:
        dict(params=all parameters, trainable=those with requires_grad, gflops=1e9 FLOPs).
    """
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    # Shapes are all FLOP counting needs: a copy on the meta device costs no compute and leaves
    # the caller's model (weights, train/eval mode) untouched.
    meta_model = copy.deepcopy(model).to("meta").eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        meta_model(torch.empty(1, 3, h, w, device="meta"))
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "gflops": counter.get_total_flops() / 1e9,
    }


def model_info_table(img_size: int = 416, num_classes: int = 80) -> str:
    """A markdown table of parameters and GFLOPs at ``img_size`` for every phi, and what attention adds."""
    rows = [f"| phi | attention | parameters | added parameters | GFLOPs at {img_size} | added MFLOPs |",
            "|---|---|---:|---:|---:|---:|"]
    base = None
    for phi, name in ATTENTION_BY_PHI.items():
        info = model_info(build_model(phi, num_classes=num_classes), img_size)
        base = base or info
        rows.append(f"| {phi} | {name or 'none'} | {info['params']:,} | {info['params'] - base['params']:,} "
                    f"| {info['gflops']:.3f} | {1e3 * (info['gflops'] - base['gflops']):.2f} |")
    return "\n".join(rows)
