"""Exponential moving average of model weights (as in YOLOv5 / timm's ModelEmaV2)."""
from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn

__all__ = ["ModelEMA"]


class ModelEMA:
    """Keeps ``ema = d * ema + (1 - d) * model`` after every optimizer step, with d ramping up as
    ``decay * (1 - exp(-updates / tau))`` so the average is not dominated by the random initial weights.
    Buffers (BatchNorm statistics) are averaged too. The EMA copy is used for evaluation and saving."""

    def __init__(self, model: nn.Module, decay: float = 0.9998, tau: float = 300, updates: int = 0):
        self.module = copy.deepcopy(_unwrap(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, updates

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        msd = _unwrap(model).state_dict()
        for k, v in self.module.state_dict().items():
            if v.dtype.is_floating_point:
                v.lerp_(msd[k].detach().to(v.dtype), 1 - d)
            else:
                v.copy_(msd[k])


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DistributedDataParallel / torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)
